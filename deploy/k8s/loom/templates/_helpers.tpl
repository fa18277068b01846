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
{{- $auth := ternary (printf ":%s@" (.Values.redis.password | urlquery)) "" (ne .Values.redis.password "") -}}
{{- printf "redis://%s%s:6379/0" $auth (include "loom.name" (list . "redis")) -}}
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

{{/* The worker's image: worker.image.repository (a custom worker image, used as given) or the
loom image; the tag from worker.image.tag, else image.tag, else appVersion. */}}
{{- define "loom.workerImage" -}}
{{- $svc := index .Values.services "agent-worker" -}}
{{- $tag := .Values.worker.image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.worker.image.repository -}}
{{- printf "%s:%s" .Values.worker.image.repository $tag -}}
{{- else if .Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .Values.image.registry) $svc.image $tag -}}
{{- else -}}
{{- printf "%s:%s" $svc.image $tag -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the clients' API keys (LOOM_API_KEYS), or "" when none is configured. */}}
{{- define "loom.apiKeysSecretName" -}}
{{- $keys := .Values.apiKeys -}}
{{- if and $keys.existingSecret $keys.value -}}
{{- fail "apiKeys: set existingSecret or value, not both" -}}
{{- else if $keys.existingSecret -}}
{{- $keys.existingSecret -}}
{{- else if $keys.value -}}
{{- include "loom.name" (list . "loom-api-keys") -}}
{{- end -}}
{{- end -}}

{{/* LOOM_API_KEYS from its Secret, for every service and the test pod; nothing when unset. */}}
{{- define "loom.apiKeysEnv" -}}
{{- with include "loom.apiKeysSecretName" . }}
- name: LOOM_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.apiKeys.secretKey }}
{{- end }}
{{- end -}}

{{/* The Secret holding LOOM_LLM_API_KEY, or "" when none is configured. */}}
{{- define "loom.llmSecretName" -}}
{{- $key := .Values.worker.llm.apiKey -}}
{{- if and $key.existingSecret $key.value -}}
{{- fail "worker.llm.apiKey: set existingSecret or value, not both" -}}
{{- else if $key.existingSecret -}}
{{- $key.existingSecret -}}
{{- else if $key.value -}}
{{- include "loom.name" (list . "loom-llm") -}}
{{- end -}}
{{- end -}}

{{/* The agent worker's own environment: its agents, its LLM settings, the API key from a Secret. */}}
{{- define "loom.workerEnv" -}}
{{- $svc := index .Values.services "agent-worker" -}}
{{- range $name := list "LOOM_WORKER_AGENTS" "LOOM_LLM_PROVIDER" "LOOM_LLM_BASE_URL" "LOOM_LLM_MODEL" "LOOM_LLM_API_KEY" }}
{{- if hasKey ($svc.env | default dict) $name }}
{{- fail (printf "services.agent-worker.env.%s: set it under worker (worker.agents, worker.llm) instead" $name) }}
{{- end }}
{{- end }}
- name: LOOM_WORKER_AGENTS
  value: {{ .Values.worker.agents | quote }}
{{- with .Values.worker.llm.provider }}
- name: LOOM_LLM_PROVIDER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.worker.llm.baseUrl }}
- name: LOOM_LLM_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.worker.llm.model }}
- name: LOOM_LLM_MODEL
  value: {{ . | quote }}
{{- end }}
{{- with include "loom.llmSecretName" . }}
- name: LOOM_LLM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.worker.llm.apiKey.secretKey }}
{{- end }}
{{- end -}}

{{/* Loom's NATS roles (loom_protocol.nats_auth.Role): one user each in files/nats-auth.conf,
named after the role (tests/deploy checks the two agree). */}}
{{- define "loom.natsRoles" -}}admin dispatcher registry worker ingest query replay client{{- end -}}

{{/* Every NATS user: the roles, then a worker user per worker.instances entry (bound to it). */}}
{{- define "loom.natsUsers" -}}
{{- concat (splitList " " (include "loom.natsRoles" .)) (.Values.worker.instances | default list) | join " " -}}
{{- end -}}

{{/* The users block the in-chart server includes: files/nats-auth.conf, plus the entry of
files/nats-worker-user.conf for each worker.instances entry, its __INSTANCE__ and $__PASSWORD__
replaced by the instance id and its password variable. */}}
{{- define "loom.natsAuthConf" -}}
{{- $block := .Files.Get "files/nats-auth.conf" -}}
{{- with .Values.worker.instances -}}
{{- $template := last (splitList "\n" (trim ($.Files.Get "files/nats-worker-user.conf"))) -}}
{{- $entries := list -}}
{{- range $instance := . -}}
{{- $entry := replace "$__PASSWORD__" (printf "$%s" (include "loom.natsPasswordKey" $instance)) $template -}}
{{- $entries = append $entries (replace "__INSTANCE__" $instance $entry) -}}
{{- end -}}
{{- $block = replace "\n]\n}" (printf ",\n  %s\n]\n}" (join ",\n  " $entries)) $block -}}
{{- end -}}
{{- $block -}}
{{- end -}}

{{/* The NATS user (its role) a service connects as: include "loom.natsUser" "agent-worker" */}}
{{- define "loom.natsUser" -}}
{{- $users := dict "agent-worker" "worker" "dispatcher" "dispatcher" "registry" "registry" "ingest" "ingest" "query" "query" "replay" "replay" -}}
{{- required (printf "service %s has no NATS user (loom.natsUser in _helpers.tpl)" .) (get $users .) -}}
{{- end -}}

{{/* The Secret key holding a NATS user's password: include "loom.natsPasswordKey" "worker" */}}
{{- define "loom.natsPasswordKey" -}}LOOM_NATS_PASSWORD_{{ upper . | replace "-" "_" }}{{- end -}}

{{/* Every role's NATS password for the chart's Secret, as JSON {LOOM_NATS_PASSWORD_<ROLE>: ...}:
natsAuth.passwords, else what the release's Secret holds (kept across upgrades), else a new
random one (a letter first: nats-server parses the value). Made once per render and kept in
.Values, so the Secret and the checksums of the pods that read it agree. */}}
{{- define "loom.natsPasswords" -}}
{{- if not (hasKey .Values.natsAuth "rendered") -}}
{{- $old := dict -}}
{{- with lookup "v1" "Secret" .Release.Namespace (include "loom.secretName" .) -}}
{{- $old = .data | default dict -}}
{{- end -}}
{{- $given := .Values.natsAuth.passwords | default dict -}}
{{- $out := dict -}}
{{- range $role := splitList " " (include "loom.natsUsers" $) -}}
{{- $key := include "loom.natsPasswordKey" $role -}}
{{- if get $given $role -}}
{{- $_ := set $out $key (get $given $role) -}}
{{- else if hasKey $old $key -}}
{{- $_ := set $out $key (get $old $key | b64dec) -}}
{{- else -}}
{{- $_ := set $out $key (printf "%s%s" (randAlpha 1) (randAlphaNum 31)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set .Values.natsAuth "rendered" $out -}}
{{- end -}}
{{- get .Values.natsAuth "rendered" | toJson -}}
{{- end -}}

{{/* A service's NATS user and its password from the Secret: include "loom.natsEnv" (list $ "dispatcher"),
or a worker instance's own user: include "loom.natsEnv" (list $ "agent-worker" "worker-0") */}}
{{- define "loom.natsEnv" -}}
{{- $root := index . 0 -}}
{{- $user := include "loom.natsUser" (index . 1) }}
{{- if and (gt (len .) 2) (index . 2) }}
{{- $user = index . 2 }}
{{- end }}
- name: LOOM_NATS_USER
  value: {{ $user | quote }}
- name: LOOM_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "loom.secretName" $root }}
      key: {{ include "loom.natsPasswordKey" $user }}
{{- end -}}

{{/* The in-chart NATS server's configuration (the ConfigMap <namePrefix>nats-config, mounted at
/etc/nats/loom): clients on 4222, monitoring on 8222, JetStream in /data, and the users of
nats-auth.conf beside it, which it includes (an include is relative to the including file). A
cluster's settings come on the command line (templates/nats.yaml). */}}
{{- define "loom.natsServerConf" -}}
listen: 0.0.0.0:4222
http_port: 8222
jetstream {
  store_dir: /data
}
include nats-auth.conf
{{- end -}}
