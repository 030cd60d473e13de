{{/* Name of the chart, overridable. */}}
{{- define "meltemi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, with the chart name unless the release name contains it. */}}
{{- define "meltemi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects carry the namespace too: one release per namespace may share a name. */}}
{{- define "meltemi.clusterName" -}}
{{- printf "%s-%s" (include "meltemi.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{- define "meltemi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meltemi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "meltemi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "meltemi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: meltemi
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "meltemi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "meltemi.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "meltemi.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Namespace the ServiceEntries and WorkloadEntries are written to. */}}
{{- define "meltemi.writeNamespace" -}}
{{- default .Release.Namespace .Values.serviceEntries.namespace -}}
{{- end -}}

{{- define "meltemi.leaseName" -}}
{{- default (include "meltemi.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* Secrets the host may read: those the rendered registries name plus rbac.extraSecretNames, sorted, as a JSON list. */}}
{{- define "meltemi.secretNames" -}}
{{- $out := list -}}
{{- range .Values.registries -}}
{{- if .credentialsSecretRef -}}
{{- $out = append $out .credentialsSecretRef.name -}}
{{- end -}}
{{- end -}}
{{- range .Values.rbac.extraSecretNames -}}
{{- $out = append $out . -}}
{{- end -}}
{{- $out | uniq | sortAlpha | toJson -}}
{{- end -}}
