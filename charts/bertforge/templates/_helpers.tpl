{{/* Chart name, overridable; cut to 63 characters because Kubernetes names are DNS labels. */}}
{{- define "bertforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-wide prefix of every resource name. Cut to 48 so that the longest suffix, "-minio-headless" (15), still fits the 63 of a DNS label. */}}
{{- define "bertforge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 48 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: (dict "root" $ "component" "tokenizer"). */}}
{{- define "bertforge.componentName" -}}
{{- printf "%s-%s" (include "bertforge.fullname" .root) .component -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "bertforge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "bertforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bertforge
{{- end -}}

{{/* Selector labels of one component; they never change after install because selectors are immutable. */}}
{{- define "bertforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bertforge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's resources. */}}
{{- define "bertforge.componentLabels" -}}
{{ include "bertforge.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* ServiceAccount the pods run as. */}}
{{- define "bertforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bertforge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image of one component; the trainer's GPU variant adds image.gpuSuffix to the tag. */}}
{{- define "bertforge.image" -}}
{{- $img := .root.Values.image -}}
{{- $tag := default .root.Chart.AppVersion $img.tag -}}
{{- printf "%s/%s/%s:%s%s" $img.registry $img.repository .component $tag (default "" .suffix) -}}
{{- end -}}

{{/* Endpoint of the store: the bundled MinIO Service, or the external endpoint (required then). */}}
{{- define "bertforge.s3Url" -}}
{{- if .Values.minio.enabled -}}
{{- printf "http://%s:%d" (include "bertforge.componentName" (dict "root" . "component" "minio")) (int .Values.minio.service.port) -}}
{{- else -}}
{{- required "store.external.endpoint is required when minio.enabled is false" .Values.store.external.endpoint -}}
{{- end -}}
{{- end -}}

{{/* Secret with the MinIO root credentials: an existing one is preferred to the chart's. */}}
{{- define "bertforge.minioSecretName" -}}
{{- default (include "bertforge.componentName" (dict "root" . "component" "minio")) .Values.minio.auth.existingSecret -}}
{{- end -}}

{{/* Secret and keys the services read their S3 credentials from: (list secretName accessKeyKey secretKeyKey). */}}
{{- define "bertforge.storeCredentials" -}}
{{- if .Values.minio.enabled -}}
{{- list (include "bertforge.minioSecretName" .) "root-user" "root-password" | toJson -}}
{{- else -}}
{{- $s := .Values.store.external -}}
{{- list (required "store.external.existingSecret is required when minio.enabled is false" $s.existingSecret) $s.accessKeyKey $s.secretKeyKey | toJson -}}
{{- end -}}
{{- end -}}

{{/* Secret holding the bearer token: an existing one is preferred to the chart's. */}}
{{- define "bertforge.authSecretName" -}}
{{- default (printf "%s-auth" (include "bertforge.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* A generated secret value that survives upgrades: reuse what the live Secret holds, else a new random one.
     Memoized for the render, so the Secret and the pods' checksum annotation see the same value.
     (dict "root" $ "secret" name "key" key "value" explicit-value). */}}
{{- define "bertforge.secretValue" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- if not (hasKey .root.Values "_generated") -}}
{{- $_ := set .root.Values "_generated" dict -}}
{{- end -}}
{{- $id := printf "%s/%s" .secret .key -}}
{{- if not (hasKey .root.Values._generated $id) -}}
{{- $live := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $live (index ($live.data | default dict) .key) -}}
{{- $_ := set .root.Values._generated $id (index $live.data .key | b64dec) -}}
{{- else -}}
{{- $_ := set .root.Values._generated $id (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- index .root.Values._generated $id -}}
{{- end -}}
{{- end -}}

{{/* gRPC address of one component's Service, as peers dial it (host:port). */}}
{{- define "bertforge.addr" -}}
{{- $port := index .root.Values .component "port" -}}
{{- printf "%s:%d" (include "bertforge.componentName" .) (int $port) -}}
{{- end -}}

{{/* Tolerations of one component: global + own (append) or own only (override). */}}
{{- define "bertforge.tolerations" -}}
{{- $own := .values.tolerations | default list -}}
{{- $all := $own -}}
{{- if eq (default "append" .values.tolerationsPolicy) "append" -}}
{{- $all = concat (.root.Values.tolerations | default list) $own -}}
{{- end -}}
{{- if $all -}}
tolerations:
{{ toYaml $all }}
{{- end -}}
{{- end -}}

{{/* Environment every service reads (docs/conventions.md); component-specific variables are added by the caller. */}}
{{- define "bertforge.commonEnv" -}}
{{- $root := .root -}}
{{- $creds := include "bertforge.storeCredentials" $root | fromJsonArray -}}
- name: BERTFORGE_HOST
  value: "0.0.0.0"
- name: BERTFORGE_PORT
  value: {{ .values.port | quote }}
- name: BERTFORGE_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
{{- if .values.threads }}
- name: BERTFORGE_THREADS
  value: {{ .values.threads | quote }}
{{- end }}
- name: BERTFORGE_S3_URL
  value: {{ include "bertforge.s3Url" $root | quote }}
- name: BERTFORGE_S3_BUCKET
  value: {{ $root.Values.store.bucket | quote }}
- name: BERTFORGE_S3_REGION
  value: {{ $root.Values.store.region | quote }}
- name: BERTFORGE_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ index $creds 0 }}
      key: {{ index $creds 1 }}
- name: BERTFORGE_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ index $creds 0 }}
      key: {{ index $creds 2 }}
{{- if $root.Values.auth.enabled }}
- name: BERTFORGE_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "bertforge.authSecretName" $root }}
      key: {{ ternary $root.Values.auth.existingSecretKey "token" (ne $root.Values.auth.existingSecret "") }}
{{- end }}
{{- if $root.Values.tls.enabled }}
- name: BERTFORGE_TLS_CERT
  value: /etc/bertforge/tls/tls.crt
- name: BERTFORGE_TLS_KEY
  value: /etc/bertforge/tls/tls.key
{{- end }}
{{- if $root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $root.Values.otel.endpoint | quote }}
{{- end }}
{{- end -}}

{{/* Readiness, liveness and startup probes on the gRPC health service of the container's gRPC port.
     Liveness asks about the server ("": the process answers), readiness about the service itself
     (bertforge.v1.<Component>Service: it can take work), so a trainer busy with a job, or one recovering its jobs,
     is never restarted for it, and a service that cannot take work leaves its Service without a restart.
     Kubernetes' grpc probe has no TLS, so with TLS the image's grpc_health_probe runs instead. */}}
{{- define "bertforge.probes" -}}
{{- $p := .root.Values.probes -}}
{{- $service := printf "bertforge.v1.%sService" (title .component) -}}
{{- $live := "" -}}
{{- $ready := "" -}}
{{- if .root.Values.tls.enabled -}}
{{- $probe := printf "exec:\n  command: [grpc_health_probe, -addr=127.0.0.1:%d, -tls, -tls-no-verify, -connect-timeout=2s, -rpc-timeout=2s" (int .values.port) -}}
{{- $live = printf "%s]" $probe -}}
{{- $ready = printf "%s, -service=%s]" $probe $service -}}
{{- else -}}
{{- $live = printf "grpc:\n  port: %d" (int .values.port) -}}
{{- $ready = printf "grpc:\n  port: %d\n  service: %s" (int .values.port) $service -}}
{{- end -}}
startupProbe:
  {{- $live | nindent 2 }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
readinessProbe:
  {{- $ready | nindent 2 }}
  initialDelaySeconds: {{ $p.readiness.initialDelaySeconds }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
livenessProbe:
  {{- $live | nindent 2 }}
  initialDelaySeconds: {{ $p.liveness.initialDelaySeconds }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
{{- end -}}

{{/* The pod template shared by the four services:
     (dict "root" $ "component" name "values" .Values.<component> "image" ref "env" extraEnvYaml "ports" portsYaml
           "podSpec" extraPodSpecYaml "resources" resourcesMap). */}}
{{- define "bertforge.podTemplate" -}}
{{- $root := .root -}}
{{- $sel := dict "root" $root "component" .component -}}
metadata:
  labels:
    {{- include "bertforge.selectorLabels" $sel | nindent 4 }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $annotations := deepCopy ($root.Values.podAnnotations | default dict) }}
  {{- if and $root.Values.auth.enabled (not $root.Values.auth.existingSecret) }}
  {{- /* The token is read at start, so a changed token must roll the pods. */}}
  {{- $token := include "bertforge.secretValue" (dict "root" $root "secret" (include "bertforge.authSecretName" $root) "key" "token" "value" $root.Values.auth.token) }}
  {{- $_ := set $annotations "checksum/auth" ($token | sha256sum | trunc 16) }}
  {{- end }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "bertforge.serviceAccountName" $root }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with .podSpec }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- $nodeSelector := merge (deepCopy (.values.nodeSelector | default dict)) ($root.Values.nodeSelector | default dict) }}
  {{- with $nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "bertforge.tolerations" (dict "root" $root "values" .values) }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with (.values.affinity | default $root.Values.affinity) }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ .image }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      ports:
        - name: grpc
          containerPort: {{ .values.port }}
          protocol: TCP
        {{- with .ports }}
        {{- . | nindent 8 }}
        {{- end }}
      env:
        {{- include "bertforge.commonEnv" . | nindent 8 }}
        {{- with .env }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with .values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- include "bertforge.probes" . | nindent 6 }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if $root.Values.tls.enabled }}
        - name: tls
          mountPath: /etc/bertforge/tls
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- if $root.Values.tls.enabled }}
    - name: tls
      secret:
        secretName: {{ required "tls.existingSecret is required when tls.enabled is true" $root.Values.tls.existingSecret }}
    {{- end }}
{{- end -}}
