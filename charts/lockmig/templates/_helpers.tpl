{{/*
Expand the name of the chart.
*/}}
{{- define "lockmig.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name (63 chars: some Kubernetes name fields are limited to
the DNS label length). If the release name contains the chart name it is used as the full name.
*/}}
{{- define "lockmig.fullname" -}}
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

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "lockmig.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels (every resource).
*/}}
{{- define "lockmig.labels" -}}
helm.sh/chart: {{ include "lockmig.chart" . }}
{{ include "lockmig.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lockmig
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "lockmig.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lockmig.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Per-component names: fullname-<component> (63 chars).
*/}}
{{- define "lockmig.controller.fullname" -}}
{{- printf "%s-controller" (include "lockmig.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "lockmig.controller.leaseName" -}}
{{- printf "%s-controller-leader" (include "lockmig.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "lockmig.agent.fullname" -}}
{{- printf "%s-agent" (include "lockmig.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "lockmig.webhook.fullname" -}}
{{- printf "%s-webhook" (include "lockmig.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "lockmig.webhook.tlsSecretName" -}}
{{- printf "%s-webhook-tls" (include "lockmig.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Service account names.
*/}}
{{- define "lockmig.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "lockmig.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}
{{- define "lockmig.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "lockmig.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}
{{- define "lockmig.webhook.serviceAccountName" -}}
{{- if .Values.webhook.serviceAccount.create }}
{{- default (include "lockmig.webhook.fullname" .) .Values.webhook.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.webhook.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: registry/repository:tag, or @digest when a digest is set.
*/}}
{{- define "lockmig.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Environment shared by every component.
*/}}
{{- define "lockmig.commonEnv" -}}
- name: LOCKMIG_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
