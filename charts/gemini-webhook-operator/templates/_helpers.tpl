{{/* The chart's name, shortened to a DNS label. */}}
{{- define "gwo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name. */}}
{{- define "gwo.fullname" -}}
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

{{- define "gwo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gwo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "gwo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gwo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gemini-webhook-operator
{{- end }}

{{- define "gwo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gwo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gwo.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* True ("true") when several replicas must elect a leader. */}}
{{- define "gwo.leaderElection" -}}
{{- if .Values.leaderElection.enabled }}true
{{- else if gt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: two operators must never act at once" }}
{{- end }}
{{- end }}

{{/* Labels the operator puts on the receiver pods it deploys. */}}
{{- define "gwo.receiverSelectorLabels" -}}
app.kubernetes.io/name: gemini-webhook-receiver
app.kubernetes.io/managed-by: gemini-webhook-operator
{{- end }}

{{/* The ports the Kubernetes API servers listen on, comma-separated: what a NetworkPolicy
sees of the API (kube-proxy rewrites the `kubernetes` Service's 443 to these before any
policy looks). `networkPolicy.apiServerPorts` when set; else the ports of the `kubernetes`
EndpointSlice in `default`, read at install and upgrade (Helm's `lookup`) where the API
serves EndpointSlices (a lookup of a kind the server does not know fails the release); else
6443 (`helm template` and dry runs see no cluster). */}}
{{- define "gwo.apiServerPorts" -}}
{{- $ports := list -}}
{{- range .Values.networkPolicy.apiServerPorts -}}
{{- $ports = append $ports (int .) -}}
{{- end -}}
{{- if and (not $ports) (.Capabilities.APIVersions.Has "discovery.k8s.io/v1/EndpointSlice") -}}
{{- $slice := lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "kubernetes" -}}
{{- range ($slice.ports | default list) -}}
{{- $ports = append $ports (int .port) -}}
{{- end -}}
{{- end -}}
{{- if not $ports -}}
{{- $ports = list 6443 -}}
{{- end -}}
{{- $ports | uniq | join "," -}}
{{- end -}}
