{{/*
The operator's permissions, split by where they apply. Each rule is there because the
operator makes that call (tests/chart/test_rbac.py compares these rules with the calls the
operator made during its own tests: nothing missing, nothing unused).
*/}}

{{/* Rules on namespaced resources, in every watched namespace. */}}
{{- define "gwo.rbac.namespacedRules" -}}
# The GeminiWebhook resources: watched, annotated and finalised by kopf, status reported.
- apiGroups: ["gemini.webhooks.dev"]
  resources: ["geminiwebhooks"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["gemini.webhooks.dev"]
  resources: ["geminiwebhooks/status"]
  verbs: ["get", "patch"]
# Signing-secret Secrets are written and rotated; API-key Secrets are read.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# The receiver each GeminiWebhook asks for, and its identity.
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Events about each resource.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Rules on cluster-scoped resources, needed in every mode. */}}
{{- define "gwo.rbac.clusterRules" -}}
# kopf follows the CRD of the resources it serves.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if not .Values.watchNamespaces }}
# Watching every namespace: kopf follows namespaces as they come and go.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}

{{/* Rules in the release namespace only: leader election. */}}
{{- define "gwo.rbac.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}
