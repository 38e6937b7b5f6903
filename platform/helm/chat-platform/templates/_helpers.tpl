{{- define "chat-platform.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "chat-platform.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "chat-platform.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "chat-platform.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The environment every process shares: plain settings, then the Secret's keys. */}}
{{- define "chat-platform.env" -}}
- name: POD_IP
  valueFrom:
    fieldRef: {fieldPath: status.podIP}
- name: ALLOWED_HOSTS
  value: "{{ .Values.allowedHosts }},$(POD_IP)"
- name: PROMETHEUS_MULTIPROC_DIR
  value: /tmp/prometheus
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "chat-platform.envFrom" -}}
- secretRef:
    name: {{ .Values.existingSecret }}
{{- end -}}

{{/* Writable scratch space: the root filesystem is read-only. */}}
{{- define "chat-platform.volumes" -}}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "chat-platform.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}
