#!/usr/bin/env bash
# End to end on a real cluster (kind): the operator installed with the Helm
# chart, the ZITADEL fake of the tests as a pod, one ScimTenant through its
# whole life, and a SCIM request through the server the operator deployed.
#
# Needs docker (BuildKit, for --build-context), kind, kubectl and helm; none of them can run on our build
# machines, so `make e2e` is for CI elsewhere. Usage: tests/e2e/kind.sh
# (KEEP_CLUSTER=1 keeps the cluster for a look afterwards).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-scim-e2e}
IMAGE=scim-operator:e2e
FAKE_IMAGE=scim-zitadel-fake:e2e
OPNS=scim-operator
TNS=tenants
for tool in docker kind kubectl helm cargo; do
  command -v "$tool" >/dev/null || { echo "e2e needs $tool on PATH" >&2; exit 2; }
done

cleanup() {
  [ "${KEEP_CLUSTER:-}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  if [ -n "${PF_PID:-}" ]; then kill "$PF_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "the operator image from the Containerfile (multi-stage release build)"
docker build -f Containerfile --target runtime -t "$IMAGE" .

step "the ZITADEL fake: the same runtime stage holding the fake's binary"
cargo build --release --locked --example zitadel_fake
tests/image/stage-rootfs.sh target/release/examples/zitadel_fake target/e2e-fake-rootfs zitadel_fake
docker build -f Containerfile --target runtime --build-context rootfs=target/e2e-fake-rootfs -t "$FAKE_IMAGE" .

step "cluster"
kind create cluster --name "$CLUSTER" --wait 120s
kind load docker-image "$IMAGE" "$FAKE_IMAGE" --name "$CLUSTER"
kubectl create namespace "$OPNS"
kubectl create namespace "$TNS"

step "ZITADEL fake (IAM_OWNER machine user with a PAT)"
kubectl -n "$OPNS" apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: zitadel}
spec:
  selector: {matchLabels: {app: zitadel}}
  template:
    metadata: {labels: {app: zitadel}}
    spec:
      containers:
        - name: zitadel
          image: $FAKE_IMAGE
          imagePullPolicy: Never
          command: [/usr/local/bin/zitadel_fake, --listen, "0.0.0.0:8080"]
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: zitadel}
spec:
  selector: {app: zitadel}
  ports: [{port: 8080, targetPort: 8080}]
EOF
kubectl -n "$OPNS" rollout status deploy/zitadel --timeout=120s
PAT=fake-pat-admin-3c1e0b7d9a   # the fake's default IAM_OWNER PAT
kubectl -n "$OPNS" create secret generic scim-operator-zitadel --from-literal=credential="$PAT"

step "operator (Helm chart, CRD from crds/, which holds only CustomResourceDefinitions)"
kubectl apply --server-side -f crds/
helm install scim-operator charts/scim-operator -n "$OPNS" \
  --set image.repository=scim-operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set zitadel.url="http://zitadel.$OPNS.svc:8080" \
  --set zitadel.credentialSecret.name=scim-operator-zitadel \
  --set "watchNamespaces={$TNS}" --wait --timeout 120s

step "the documented CRD upgrade: server-side apply over the installed CRD"
kubectl apply --server-side -f crds/ --force-conflicts
kubectl wait --for=condition=Established crd/scimtenants.scim.unique.app --timeout=60s

step "a ScimTenant becomes Ready"
kubectl -n "$TNS" apply -f - <<'EOF'
apiVersion: scim.unique.app/v1alpha1
kind: ScimTenant
metadata: {name: acme}
spec:
  zitadel:
    organizationId: "300000000000000001"
    projectId: "300000000000000003"
    projectOrganizationId: "300000000000000002"
    idpId: "300000000000000004"
    defaultRoles: [Chat.User]
  keys: [{name: entra}]
EOF
kubectl -n "$TNS" wait --for=condition=Ready st/acme --timeout=180s
kubectl -n "$TNS" get st acme
# Its NetworkPolicy (admin port from the operator's namespace only) did not keep it from Ready:
# the operator read its /status and the server reached ZITADEL on the URL's port.
kubectl -n "$TNS" get networkpolicy acme-scim -o jsonpath='{.spec.ingress[1].from[0].namespaceSelector.matchLabels}' | grep -q "$OPNS"

step "Entra's first request, with the key the operator issued"
TOKEN=$(kubectl -n "$TNS" get secret acme-scim-key-entra -o jsonpath='{.data.token}' | base64 -d)
kubectl -n "$TNS" port-forward svc/acme-scim 18080:80 >/dev/null 2>&1 &
PF_PID=$!
for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18080/scim/v2/ServiceProviderConfig -H "Authorization: Bearer $TOKEN" && break; sleep 0.2; done
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:18080/scim/v2/Users \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/scim+json' \
  -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"e2e@contoso.com","externalId":"0f4c1e2a","active":true,"name":{"givenName":"E","familyName":"Two"},"emails":[{"primary":true,"value":"e2e@contoso.com"}]}')
[ "$code" = 201 ] || { echo "POST /Users answered $code" >&2; exit 1; }
wrong=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18080/scim/v2/Users -H 'Authorization: Bearer wrong')
[ "$wrong" = 401 ] || { echo "a wrong key answered $wrong" >&2; exit 1; }

step "provisioning health reaches the tenant's status (polled once a minute)"
for _ in $(seq 90); do
  users=$(kubectl -n "$TNS" get st acme -o jsonpath='{.status.provisioning.users}')
  [ "$users" = 1 ] && break
  sleep 2
done
[ "$users" = 1 ] || { echo "status.provisioning.users is '$users'" >&2; exit 1; }

step "a deleted child comes back"
kubectl -n "$TNS" delete deploy acme-scim --wait=true
kubectl -n "$TNS" wait --for=condition=Available deploy/acme-scim --timeout=120s

step "deletion runs the finalizer and keeps the store"
kubectl -n "$TNS" delete st acme --timeout=120s
kubectl -n "$TNS" get pvc acme-scim-data >/dev/null
if kubectl -n "$TNS" get secret acme-scim-key-entra >/dev/null 2>&1; then
  kubectl -n "$TNS" wait --for=delete secret/acme-scim-key-entra --timeout=60s
fi

printf '\ne2e passed\n'
