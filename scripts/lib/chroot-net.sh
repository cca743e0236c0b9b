# Sourced by the chroot stages (fresh-machine-test.sh, vulkan-lavapipe-test.sh): what a
# chroot needs to reach the package registries the way this machine does. Machines of
# our kind may sit behind a TLS proxy whose CA only the host trusts.

# chroot_trust_host ROOT: DNS, the host's CA bundle and extra CAs, pip's config.
chroot_trust_host() {
  local root=$1
  cp /etc/resolv.conf "$root/etc/"
  if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
  fi
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
  if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/"; fi
}

# chroot_passenv: fills the array `passenv` with the CA, proxy and index settings of
# this shell, as VAR=value words for `env -i`.
chroot_passenv() {
  passenv=()
  local v
  for v in SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE PIP_CERT REQUESTS_CA_BUNDLE PIP_DEFAULT_TIMEOUT \
           PIP_INDEX_URL PIP_EXTRA_INDEX_URL CARGO_HTTP_CAINFO http_proxy https_proxy HTTP_PROXY \
           HTTPS_PROXY no_proxy NO_PROXY; do
    if [ -n "${!v:-}" ]; then passenv+=("$v=${!v}"); fi
  done
}
