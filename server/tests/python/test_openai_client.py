"""llama-rs-server through the official `openai` client and `requests` (PyPI).

Run by scripts/test-server-python.sh, which starts the server and sets LLAMA_RS_SERVER.
"""
import json
import os
import sys

import openai
import requests

BASE = os.environ["LLAMA_RS_SERVER"]
client = openai.OpenAI(base_url=BASE + "/v1", api_key="sekrit")
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + (f": {detail}" if not cond and detail else ""))
    if not cond:
        failures.append(name)


models = client.models.list()
model = models.data[0].id
check("models.list", model == "smol", model)

msgs = [{"role": "user", "content": "Name a color."}]
r = client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0)
text = r.choices[0].message.content
check("chat.completions", bool(text) and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens)
check("cached_tokens field", r.usage.prompt_tokens_details.cached_tokens is not None)

chunks = list(client.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0, stream=True,
                                             stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("chat stream == non-stream", streamed == text, f"{streamed!r} vs {text!r}")
check("stream usage chunk", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens)

r = client.chat.completions.create(model=model, messages=msgs, max_tokens=8, temperature=1.0, seed=3, n=3)
check("n=3", len(r.choices) == 3 and [c.index for c in r.choices] == [0, 1, 2])

r = client.chat.completions.create(model=model, messages=msgs, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
lp = r.choices[0].logprobs.content
check("chat logprobs", len(lp) > 0 and len(lp[0].top_logprobs) == 2 and lp[0].logprob <= 0)

schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}],
    max_tokens=40, temperature=0,
    response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
try:
    check("json_schema output", isinstance(json.loads(r.choices[0].message.content)["city"], str))
except Exception as e:  # noqa: BLE001
    check("json_schema output", False, repr(e))

r = client.completions.create(model=model, prompt="1, 2, 3,", max_tokens=4, temperature=0)
check("completions", bool(r.choices[0].text))

e = client.embeddings.create(model=model, input=["hello", "world"])  # base64 on the wire
check("embeddings (base64)", len(e.data) == 2 and len(e.data[0].embedding) == 576)

# One served model answers whatever model a client names (as llama-server does).
r = client.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=16, temperature=0)
check("any model name answers", r.model == model and r.choices[0].message.content == text, r.model)

# The Responses API (`client.responses.create`), on the same protocol layer: the same
# answer as chat, streamed as typed events, function tools, previous_response_id,
# structured output.
resp = client.responses.create(model=model, input="Name a color.", max_output_tokens=16, temperature=0)
check("responses.create == chat", resp.output_text == text and resp.status in ("completed", "incomplete"),
      f"{resp.output_text!r} vs {text!r}")
check("responses usage", resp.usage.output_tokens == r.usage.completion_tokens, resp.usage)
events = list(client.responses.create(model=model, input="Name a color.", max_output_tokens=16, temperature=0,
                                      stream=True))
kinds = [e.type for e in events]
deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
check("responses stream events", kinds[0] == "response.created" and kinds[-1] in ("response.completed",
      "response.incomplete") and "response.output_item.added" in kinds, kinds)
check("responses stream == non-stream", deltas == text and events[-1].response.output_text == text,
      f"{deltas!r} vs {text!r}")
check("responses sequence numbers", [e.sequence_number for e in events] == list(range(len(events))))
weather = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
resp = client.responses.create(model=model, input="What is the weather in Paris?", tools=weather,
                               tool_choice="required", max_output_tokens=96, temperature=0, instructions="Use tools.")
calls = [o for o in resp.output if o.type == "function_call"]
try:
    check("responses function call", calls and calls[0].name == "get_weather"
          and isinstance(json.loads(calls[0].arguments)["city"], str) and calls[0].call_id, resp.output)
except Exception as e:  # noqa: BLE001
    check("responses function call", False, repr(e))
if calls:
    follow = client.responses.create(model=model, previous_response_id=resp.id, tools=weather,
                                     input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                             "output": "sunny, 21 C"}], max_output_tokens=24, temperature=0)
    check("responses previous_response_id + function output", bool(follow.output_text)
          and follow.previous_response_id == resp.id, follow.output)
    streamed_calls = [e for e in client.responses.create(
        model=model, input="What is the weather in Paris?", tools=weather, tool_choice="required",
        max_output_tokens=96, temperature=0, instructions="Use tools.", stream=True)
        if e.type == "response.function_call_arguments.done"]
    check("responses streamed function call", len(streamed_calls) == 1
          and json.loads(streamed_calls[0].arguments) == json.loads(calls[0].arguments), streamed_calls)
resp = client.responses.create(model=model, input="Which city is the capital of France? Answer in JSON.",
                               max_output_tokens=40, temperature=0,
                               text={"format": {"type": "json_schema", "name": "answer", "schema": schema}})
try:
    check("responses json_schema", isinstance(json.loads(resp.output_text)["city"], str))
except Exception as e:  # noqa: BLE001
    check("responses json_schema", False, repr(e))
try:
    client.responses.create(model=model, input="x", previous_response_id="resp_nope")
    check("unknown previous_response_id -> NotFoundError", False)
except openai.NotFoundError as err:
    check("unknown previous_response_id -> NotFoundError", "resp_nope" in str(err))

try:
    client.chat.completions.create(model=model, messages=msgs, max_tokens=10**6)
    check("max_tokens beyond context -> BadRequestError", False)
except openai.BadRequestError as err:
    check("max_tokens beyond context -> BadRequestError", "context" in str(err))

try:
    openai.OpenAI(base_url=BASE + "/v1", api_key="wrong").models.list()
    check("wrong key -> AuthenticationError", False)
except openai.AuthenticationError:
    check("wrong key -> AuthenticationError", True)

check("health open without key", requests.get(BASE + "/health").status_code == 200)
h = {"Authorization": "Bearer sekrit"}
check("tokenize", requests.post(BASE + "/tokenize", json={"content": "hi"}, headers=h).json()["tokens"] != [])
check("bad json -> 400", requests.post(BASE + "/v1/chat/completions", data="{", headers=h).status_code == 400)

# An image as a data URL (the server runs with a synthetic projector: --mmproj).
image = os.environ.get("LLAMA_RS_TEST_IMAGE")
if image:
    import base64
    with open(image, "rb") as f:
        url = "data:image/jpeg;base64," + base64.b64encode(f.read()).decode()
    parts = [{"type": "text", "text": "Describe the image."}, {"type": "image_url", "image_url": {"url": url}}]
    r1 = client.chat.completions.create(model=model, messages=[{"role": "user", "content": parts}],
                                        max_tokens=8, temperature=0)
    r2 = client.chat.completions.create(model=model, messages=[{"role": "user", "content": parts}],
                                        max_tokens=8, temperature=0)
    check("image_url data URL answered", r1.choices[0].message.content is not None)
    check("image counted in the prompt", r1.usage.prompt_tokens >= 16, r1.usage)
    check("same image, same answer", r1.choices[0].message.content == r2.choices[0].message.content)
    try:
        client.chat.completions.create(model=model, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}])
        check("remote image URL -> BadRequestError", False)
    except openai.BadRequestError as err:
        check("remote image URL -> BadRequestError", "data URL" in str(err))

sys.exit(1 if failures else 0)
