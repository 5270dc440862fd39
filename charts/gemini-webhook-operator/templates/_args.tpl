{{/* The operator's command line; flags as `gemini-webhooks operator --help` lists them. */}}
{{- define "gwo.operatorArgs" -}}
- operator
- --metrics-port={{ .Values.metricsPort }}
- --health-port={{ .Values.healthPort }}
- --log-level={{ .Values.operator.logLevel }}
- --log-format={{ .Values.operator.logFormat }}
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
{{- if include "gwo.leaderElection" . }}
- --leader-election
{{- end }}
{{- range .Values.operator.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
