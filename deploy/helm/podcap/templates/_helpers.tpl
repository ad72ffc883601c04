{{/*
The base name of every object: fullnameOverride, else the release name when it contains
"podcap", else <release>-podcap. With release "podcap" the objects are named as deploy/ names
them (podcap-agent, podcap-webhook, podcap-rules).
*/}}
{{- define "podcap.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains "podcap" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-podcap" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "podcap.agent" -}}
{{- printf "%s-agent" (include "podcap.fullname" .) -}}
{{- end -}}

{{- define "podcap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "podcap.agent" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "podcap.priorityClassName" -}}
{{- if .Values.priorityClassName -}}
{{- .Values.priorityClassName -}}
{{- else if .Values.priorityClass.create -}}
{{- include "podcap.agent" . -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object (deploy/'s app.kubernetes.io/name plus Helm's usual ones). */}}
{{- define "podcap.labels" -}}
app.kubernetes.io/name: podcap
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The agent pods' selector: `kubectl podcap` finds them by name=podcap,component=agent. */}}
{{- define "podcap.agentSelector" -}}
app.kubernetes.io/name: podcap
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "podcap.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "podcap.apiTokenSecret" -}}
{{- default (printf "%s-api-token" (include "podcap.fullname" .)) .Values.api.tokenSecret -}}
{{- end -}}

{{- define "podcap.webhookTokenSecret" -}}
{{- default (printf "%s-webhook-token" (include "podcap.fullname" .)) .Values.webhook.tokenSecret -}}
{{- end -}}

{{- define "podcap.policyConfigMap" -}}
{{- default (printf "%s-rules" (include "podcap.fullname" .)) .Values.policies.existingConfigMap -}}
{{- end -}}

{{/* Whether the agent gets a policy dir at all. */}}
{{- define "podcap.policies" -}}
{{- if or .Values.policies.existingConfigMap .Values.policies.builtin .Values.policies.extra -}}true{{- end -}}
{{- end -}}
