{{/*
Names and labels.
*/}}
{{- define "scim-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scim-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "scim-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scim-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scim-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "scim-operator.labels" -}}
helm.sh/chart: {{ include "scim-operator.chart" . }}
{{ include "scim-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: scim-operator
{{- end }}

{{- define "scim-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scim-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image; the SCIM server pods run the same image (SCIM_SERVER_IMAGE).
*/}}
{{- define "scim-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the controller reads and writes in the namespaces it watches: least privilege.
Used by the ClusterRole (all namespaces) or by one Role per watched namespace.
Keep equal to config/rbac/role.yaml; tests/packaging.rs parses this block and
compares it with its CONTROLLER_PERMISSIONS table, so it must stay plain YAML.
*/}}
{{- define "scim-operator.rules" -}}
- apiGroups: ["scim.unique.app"]
  resources: ["scimtenants"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["scim.unique.app"]
  resources: ["scimtenants/status"]
  verbs: ["patch"]
- apiGroups: ["scim.unique.app"]
  resources: ["scimtenants/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps", "services", "persistentvolumeclaims"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
The leader-election Lease, in the release namespace only. Keep equal to
config/rbac/leader_election_role.yaml (checked by tests/packaging.rs).
*/}}
{{- define "scim-operator.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update", "patch"]
{{- end }}

{{/*
The names of the operator's pull secrets, comma-separated: tenant pods that name none get them.
*/}}
{{- define "scim-operator.pullSecretNames" -}}
{{- $names := list }}
{{- range .Values.imagePullSecrets }}
{{- $names = append $names .name }}
{{- end }}
{{- join "," $names }}
{{- end }}

{{/*
The port ZITADEL is reached on: networkPolicy.zitadel.port, else the port of zitadel.url
(443 for https://, 80 for http://). NetworkPolicies match ports, never host names.
*/}}
{{- define "scim-operator.zitadelPort" -}}
{{- $port := int .Values.networkPolicy.zitadel.port }}
{{- if eq $port 0 }}
{{- $url := urlParse (required "zitadel.url is required (the ZITADEL API base URL, e.g. https://id.example.com)" .Values.zitadel.url) }}
{{- $hostPort := splitList ":" $url.host }}
{{- if gt (len $hostPort) 1 }}
{{- last $hostPort }}
{{- else if eq $url.scheme "http" }}
{{- 80 }}
{{- else }}
{{- 443 }}
{{- end }}
{{- else }}
{{- $port }}
{{- end }}
{{- end }}

{{/*
What a namespace admin may do with ScimTenants (aggregated into admin and edit).
Keep equal to config/rbac/scimtenant_editor_role.yaml (checked by tests/packaging.rs).
*/}}
{{- define "scim-operator.editorRules" -}}
- apiGroups: ["scim.unique.app"]
  resources: ["scimtenants"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
- apiGroups: ["scim.unique.app"]
  resources: ["scimtenants/status"]
  verbs: ["get"]
{{- end }}

{{/*
What a viewer may read (aggregated into view, edit and admin): ScimTenants and their
status, never Secrets. Keep equal to config/rbac/scimtenant_viewer_role.yaml.
*/}}
{{- define "scim-operator.viewerRules" -}}
- apiGroups: ["scim.unique.app"]
  resources: ["scimtenants", "scimtenants/status"]
  verbs: ["get", "list", "watch"]
{{- end }}
