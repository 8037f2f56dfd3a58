{{/* Names, labels and probe actions shared by the depscreen chart's templates. */}}

{{- define "depscreen.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "depscreen.fullname" -}}
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

{{- define "depscreen.selectorLabels" -}}
app.kubernetes.io/name: {{ include "depscreen.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "depscreen.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "depscreen.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "depscreen.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The DEPSCREEN_* variable of a setting named in camelCase: maxSessions -> DEPSCREEN_MAX_SESSIONS. */}}
{{- define "depscreen.envName" -}}
{{- printf "DEPSCREEN_%s" (snakecase . | upper) }}
{{- end }}

{{/* A setting's value as an env string; whole numbers without exponent (YAML numbers arrive as float64). */}}
{{- define "depscreen.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- int64 . | quote }}
{{- else }}
{{- toString . | quote }}
{{- end }}
{{- end }}

{{/*
One probe's action and timing. Call with (dict "root" $ "service" NAME "timing" .Values.probes.X), by
.Values.probes.kind: a gRPC health check of NAME ("" = the whole server, for liveness; depscreen.v1.Screening =
admitting sessions, for readiness), or over HTTP or the image's health check, /healthz for the whole server
and /readyz for the Screening service.
*/}}
{{- define "depscreen.probe" -}}
{{- $tls := or .root.Values.server.tlsCert .root.Values.tls.secretName }}
{{- $path := ternary "/healthz" "/readyz" (eq .service "") }}
{{- if eq .root.Values.probes.kind "grpc" }}
{{- if $tls }}
{{- fail "probes.kind=grpc cannot reach a TLS server (Kubernetes' gRPC probes speak plaintext): use probes.kind=http, or exec under mTLS" }}
{{- end }}
grpc:
  port: {{ .root.Values.server.grpcPort }}
  {{- with .service }}
  service: {{ . }}
  {{- end }}
{{- else if eq .root.Values.probes.kind "exec" }}
exec:
  command: ["python", "/opt/depscreen/healthcheck.py", {{ $path | quote }}]
{{- else }}
{{- if .root.Values.server.tlsClientCa }}
{{- fail "probes.kind=http cannot present a client certificate to an mTLS server: use probes.kind=exec with probes.clientCert and probes.clientKey" }}
{{- end }}
httpGet:
  path: {{ $path }}
  port: http
  {{- if $tls }}
  scheme: HTTPS
  {{- end }}
{{- end }}
periodSeconds: {{ .timing.periodSeconds }}
timeoutSeconds: {{ .timing.timeoutSeconds }}
failureThreshold: {{ .timing.failureThreshold }}
{{- end }}
