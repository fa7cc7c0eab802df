{{- define "kubeloop.name" -}}kubeloop{{- end -}}

{{- define "kubeloop.fullname" -}}
{{- if contains "kubeloop" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kubeloop" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubeloop.labels" -}}
app.kubernetes.io/name: kubeloop
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubeloop.selectorLabels" -}}
app.kubernetes.io/name: kubeloop
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubeloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubeloop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubeloop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The rules for namespaced resources: what the operator reads, writes and owns.
Every verb here has a code path that needs it (docs/operations.md lists them).
*/}}
{{- define "kubeloop.namespacedRules" -}}
- apiGroups: [kubeloop.io]
  resources: [trainingjobs, modeldeployments, driftmonitors, experiments, batchpredictions]
  verbs: [get, list, watch]
- apiGroups: [kubeloop.io]
  resources: [trainingjobs]
  # patch: server-side apply, and a stopped trial's spec.suspend
  verbs: [create, patch]
- apiGroups: [kubeloop.io]
  resources: [experiments]
  # a DriftMonitor's retrain that is a search (server-side apply)
  verbs: [create, patch]
- apiGroups: [kubeloop.io]
  resources: [modeldeployments]
  verbs: [patch]
- apiGroups: [kubeloop.io]
  resources: [trainingjobs/status, modeldeployments/status, driftmonitors/status,
              experiments/status, batchpredictions/status]
  verbs: [get, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  # delete: the shadow's Service when spec.shadow goes
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if gt (int .Values.replicas) 1 }}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end -}}
