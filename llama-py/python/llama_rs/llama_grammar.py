"""`LlamaGrammar`: GBNF grammars, from a string, a file or a JSON schema."""
from __future__ import annotations

import json
from typing import Any

from . import _llama_rs as _native

JSON_GBNF = r'''root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
'''


class LlamaGrammar:
    """A grammar; checked when a generation uses it (a bad grammar is a ValueError then)."""

    def __init__(self, *args: Any, _grammar: str, **kwargs: Any):
        self._grammar = _grammar

    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> "LlamaGrammar":
        return cls(_grammar=grammar)

    @classmethod
    def from_file(cls, file: str, verbose: bool = True) -> "LlamaGrammar":
        with open(file, encoding="utf-8") as f:
            return cls.from_string(f.read(), verbose)

    @classmethod
    def from_json_schema(cls, json_schema: str, verbose: bool = True) -> "LlamaGrammar":
        """A schema we cannot enforce is a ValueError naming the keyword, never an
        unconstrained grammar."""
        if not isinstance(json_schema, str):
            json_schema = json.dumps(json_schema)
        return cls(_grammar=_native.json_schema_to_gbnf(json_schema))
