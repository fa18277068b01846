{{/*
Resource name: namePrefix + a fixed name. With the default empty prefix the Services are
called like the compose services (dispatcher, nats, ...). Usage:
  include "loom.name" (list $ "dispatcher")
*/}}
{{- define "loom.name" -}}
{{- $root := index . 0 -}}
{{- printf "%s%s" $root.Values.namePrefix (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "loom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: include "loom.selectorLabels" (list $ "dispatcher") */}}
{{- define "loom.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ index . 1 }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- end -}}

{{/* Common labels: include "loom.labels" (list $ "dispatcher") */}}
{{- define "loom.labels" -}}
{{- $root := index . 0 -}}
{{ include "loom.selectorLabels" . }}
app.kubernetes.io/part-of: loom
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ include "loom.chart" $root }}
{{- end -}}

{{/* Image of a Loom service: include "loom.image" (list $ $svc.image) */}}
{{- define "loom.image" -}}
{{- $root := index . 0 -}}
{{- $repo := index . 1 -}}
{{- $tag := $root.Values.image.tag | default $root.Chart.AppVersion -}}
{{- if $root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.image.registry) $repo $tag -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "loom.configName" -}}{{ include "loom.name" (list . "loom-config") }}{{- end -}}

{{- define "loom.secretName" -}}
{{- if .Values.existingSecret -}}{{ .Values.existingSecret }}{{- else -}}{{ include "loom.name" (list . "loom-secrets") }}{{- end -}}
{{- end -}}

{{/* Broker and store URLs: the in-chart server when enabled, else the external URL (required). */}}
{{- define "loom.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s:4222" (include "loom.name" (list . "nats")) -}}
{{- else -}}
{{- required "externalUrls.nats is required when nats.enabled is false" .Values.externalUrls.nats -}}
{{- end -}}
{{- end -}}

{{- define "loom.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s:6379/0" (include "loom.name" (list . "redis")) -}}
{{- else -}}
{{- required "externalUrls.redis is required when redis.enabled is false" .Values.externalUrls.redis -}}
{{- end -}}
{{- end -}}

{{- define "loom.databaseUrl" -}}
{{- if .Values.timescaledb.enabled -}}
{{- printf "postgresql://%s:%s@%s:5432/%s" .Values.timescaledb.user .Values.timescaledb.password (include "loom.name" (list . "timescaledb")) .Values.timescaledb.database -}}
{{- else -}}
{{- required "externalUrls.database (or existingSecret) is required when timescaledb.enabled is false" .Values.externalUrls.database -}}
{{- end -}}
{{- end -}}

{{/* Pod-level settings shared by every workload of the chart. */}}
{{- define "loom.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
