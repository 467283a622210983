#!/usr/bin/env bash
# The image's runtime mechanics, quickly (loopback only, nothing leaves the machine):
#   tests/image/smoke.sh IMAGE
# 1. `serve` as 65532:65532, read-only root, no capabilities: /healthz and /readyz answer;
# 2. a host name resolves inside (NSS `files` via an --add-host entry, glibc's
#    getaddrinfo, as reqwest resolves ZITADEL): preflight reaches a local HTTP server by name;
# 3. https verifies certificates: the same against a self-signed local server fails
#    with a certificate error, not a connection or resolver error.
set -euo pipefail
IMAGE=${1:?usage: $0 IMAGE}
RUNTIME=${CONTAINER_RUNTIME:-podman}
RUN=("$RUNTIME")
[ "$RUNTIME" = podman ] && RUN+=(--runtime runc --cgroup-manager=cgroupfs)
work=$(mktemp -d); pids=(); names=()
cleanup() {
  for n in "${names[@]}"; do "${RUN[@]}" rm -f "$n" >/dev/null 2>&1 || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ok=0 fail=0
check() { if "$@"; then ok=$((ok+1)); echo "ok: $CHECK"; else fail=$((fail+1)); echo "FAILED: $CHECK"; fi; }
SEC=(--read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges --user 65532:65532 --network host)

# 1. serve
sp=$(free_port) ap=$(free_port) name=scim-smoke-$$
names+=("$name")
mkdir -p "$work/data" && chmod 0777 "$work/data"
"${RUN[@]}" run -d --name "$name" "${SEC[@]}" -v "$work/data:/data" "$IMAGE" \
  serve --listen "127.0.0.1:$sp" --admin-listen "127.0.0.1:$ap" --data-dir /data >/dev/null
up=false
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$ap/healthz" >/dev/null && { up=true; break; }; sleep 0.1; done
CHECK="serve answers /healthz (read-only root, uid 65532, no capabilities)"; check $up
CHECK="serve answers /readyz"; check curl -fs -o /dev/null "http://127.0.0.1:$ap/readyz"
pid=$("${RUN[@]}" inspect -f '{{.State.Pid}}' "$name")
CHECK="the process runs as 65532:65532"; check grep -Eq '^Uid:\s+65532\s' "/proc/$pid/status"
CHECK="...with no effective capabilities"; check grep -Eq '^CapEff:\s+0+$' "/proc/$pid/status"
CHECK="the root filesystem is read-only"; check grep -Eq '^\S+ / \S+ ro[, ]' "/proc/$pid/mounts"
"${RUN[@]}" rm -f "$name" >/dev/null

# 2. a host name resolves: preflight asks "zitadel.test" (an /etc/hosts entry) for users.
hp=$(free_port)
python3 - "$hp" "$work/http.log" <<'PY' &
import http.server, sys
log = open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def _any(self):
        log.write(f"{self.command} {self.path} Host={self.headers.get('Host')}\n")
        self.send_response(500); self.send_header("Content-Length", "0"); self.end_headers()
    do_GET = do_POST = _any
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pids+=($!)
printf 'fake-pat\n' >"$work/pat"
printf 'userPrincipalName,mail,objectId\na@contoso.com,a@contoso.com,0f4c1e2a\n' >"$work/users.csv"
cfg() { cat >"$work/serve.yaml" <<Y
zitadel:
  url: $1
  credentials: {patFile: /etc/scim/zitadel/pat}
  organizationId: '1'
  projectId: '2'
  projectOrganizationId: '3'
Y
}
# preflight URL PORT OUT: runs preflight in the image against ZITADEL at URL, once
# the local server on PORT accepts connections (bounded wait, no fixed sleep).
preflight() {
  cfg "$1"
  local up=false
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && { up=true; break; }; sleep 0.1; done
  $up || { echo "the local server on port $2 never listened" >&2; return 1; }
  "${RUN[@]}" run --rm "${SEC[@]}" --add-host zitadel.test:127.0.0.1 \
    -v "$work/serve.yaml:/etc/scim/config/serve.yaml:ro" -v "$work/pat:/etc/scim/zitadel/pat:ro" \
    -v "$work/users.csv:/in/users.csv:ro" "$IMAGE" \
    preflight --config /etc/scim/config/serve.yaml --users /in/users.csv >"$3" 2>&1 || true
}
preflight "http://zitadel.test:$hp" "$hp" "$work/pf.out"
CHECK="zitadel.test resolves inside the image and is reached over HTTP"; check grep -q "Host=zitadel.test:$hp" "$work/http.log"

# 3. https verifies: a self-signed certificate for zitadel.test is refused.
tp=$(free_port)
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=zitadel.test \
  -addext subjectAltName=DNS:zitadel.test -keyout "$work/k.pem" -out "$work/c.pem" 2>/dev/null
python3 - "$tp" "$work/c.pem" "$work/k.pem" "$work/https.log" <<'PY' &
# Logs how each TLS handshake ends: the client's alert names why it refused.
import socket, ssl, sys
log = open(sys.argv[4], "a", buffering=1)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    c, _ = srv.accept()
    try:
        t = ctx.wrap_socket(c, server_side=True); log.write("handshake completed\n"); t.close()
    except (ssl.SSLError, OSError) as e:
        log.write(f"handshake refused: {e}\n"); c.close()
PY
pids+=($!)
preflight "https://zitadel.test:$tp" "$tp" "$work/pf-tls.out"
CHECK="https to a self-signed server: the client refuses its certificate (TLS alert)"
check grep -qi 'handshake refused:.*\(unknown.ca\|bad.certificate\|certificate.unknown\)' "$work/https.log"
CHECK="...and no handshake completed"; check bash -c "! grep -q 'handshake completed' '$work/https.log'"
[ "$fail" = 0 ] || { echo "--- preflight output:"; cat "$work/pf.out" "$work/pf-tls.out" "$work/https.log"; }
echo "image smoke: $ok passed, $fail failed"
[ "$fail" = 0 ]
