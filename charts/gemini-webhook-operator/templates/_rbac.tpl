{{/*
The operator's permissions, split by where they apply. Each rule is there because the
operator makes that call (tests/chart/test_rbac.py runs the operator with this chart's
command line and compares these rules with the API calls it made: nothing missing,
nothing unused).
*/}}

{{/* Rules on namespaced resources, in every watched namespace. */}}
{{- define "gwo.rbac.namespacedRules" -}}
# GeminiWebhooks: kopf watches them, the operator patches its finalizer on and off (kopf
# its progress annotations);
# the reconciler reports status.
- apiGroups: ["gemini.webhooks.dev"]
  resources: ["geminiwebhooks"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["gemini.webhooks.dev"]
  resources: ["geminiwebhooks/status"]
  verbs: ["patch"]
# API-key Secrets are read; signing-secret Secrets written, rotated and, with the resource,
# deleted; a dynamic receiver's job-key Secret created once (never rewritten). They are
# read from a list-watch of the namespace's Secrets (and by `get` where it is not ready);
# each receiver's Role may get, list and watch its own signing-secret Secret too.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The receiver each GeminiWebhook asks for: applied, pruned when the spec no longer
# renders them, and read from a list-watch per kind of all receivers (by label).
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# `spec.receiver.expose` (an Ingress or a Gateway API HTTPRoute) and the receiver's
# NetworkPolicy. The stored route comes back from create/patch with its status, so there
# is no `get`; HTTPRoutes are listed and watched (for pruning) even where the Gateway API
# is absent.
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses", "networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The health check asks every ready receiver pod for its pings when several replicas
# keep them in memory (no Redis): the pods are listed by the receiver's labels.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Events about each resource.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* Rules on cluster-scoped resources. */}}
{{- define "gwo.rbac.clusterRules" -}}
# kopf follows the CRD of the resources it serves.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.watchNamespaces }}
# Watching named namespaces: kopf follows them as they come and go.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}

{{/* Leader election: the one Lease the chart makes, in the release namespace. */}}
{{- define "gwo.rbac.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "gwo.fullname" . | quote }}]
  verbs: ["get", "patch"]
{{- end }}
