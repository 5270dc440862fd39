{{/* The operator's command line; flags as `gemini-webhooks operator --help` lists them. */}}
{{- define "gwo.operatorArgs" -}}
- operator
- --liveness=http://0.0.0.0:{{ .Values.healthPort }}/healthz
- --metrics-port={{ .Values.metricsPort }}
- --receiver-image={{ include "gwo.image" . }}
- --drift-interval={{ .Values.operator.driftInterval }}
- --heal-interval={{ .Values.operator.healInterval }}
- --api-rate={{ .Values.operator.apiRate }}
- --api-timeout={{ .Values.operator.apiTimeout }}
- --max-concurrent-reconciles={{ .Values.operator.maxConcurrentReconciles }}
- --cluster-domain={{ .Values.operator.clusterDomain }}
{{- with .Values.receivers.networkPolicy }}
{{- if .enabled }}
- --receiver-public-namespace={{ .ingressControllerNamespace }}
- --receiver-prometheus-namespace={{ .prometheusNamespace }}
{{- range splitList "," (include "gwo.apiServerPorts" $) }}
- --api-server-port={{ . }}
{{- end }}
{{- else }}
- --no-receiver-network-policy
{{- end }}
{{- end }}
{{- with .Values.receivers.proxy }}
{{- with .httpProxy }}
- {{ printf "--receiver-http-proxy=%s" . | quote }}
{{- end }}
{{- with .httpsProxy }}
- {{ printf "--receiver-https-proxy=%s" . | quote }}
{{- end }}
{{- with .noProxy }}
- {{ printf "--receiver-no-proxy=%s" . | quote }}
{{- end }}
{{- end }}
{{- with .Values.operator.apiBaseUrl }}
- --api-base-url={{ . }}
{{- end }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- if include "gwo.leaderElection" . }}
- --leader-elect
- --leader-election-id={{ include "gwo.fullname" . }}
- --lease-duration={{ .Values.leaderElection.leaseDuration }}
- --renew-deadline={{ .Values.leaderElection.renewDeadline }}
- --retry-period={{ .Values.leaderElection.retryPeriod }}
{{- end }}
{{- if .Values.operator.verbose }}
- --verbose
{{- end }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
