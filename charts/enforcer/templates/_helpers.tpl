{{/*
Chart name, shortened to the 63 characters a label value allows.
*/}}
{{- define "enforcer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: `<release>-<chart name>`, or the release name alone when it
already contains the chart name.
*/}}
{{- define "enforcer.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "enforcer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the pods: they never change over the life of a release.
*/}}
{{- define "enforcer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "enforcer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "enforcer.labels" -}}
helm.sh/chart: {{ include "enforcer.chart" . }}
{{ include "enforcer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: proxy
app.kubernetes.io/part-of: enforcer
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels of the `helm test` pod: not the selector labels, so neither the Service, the
PodDisruptionBudget nor the NetworkPolicy ever select it.
*/}}
{{- define "enforcer.testLabels" -}}
helm.sh/chart: {{ include "enforcer.chart" . }}
app.kubernetes.io/name: {{ printf "%s-test" (include "enforcer.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: enforcer
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "enforcer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "enforcer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The enforcer image: repository:tag, plus @digest when one is given.
*/}}
{{- define "enforcer.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap holding the policy files.
*/}}
{{- define "enforcer.policyConfigMapName" -}}
{{- if .Values.policy.existingConfigMap }}
{{- .Values.policy.existingConfigMap }}
{{- else }}
{{- printf "%s-policy" (include "enforcer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The policy files the chart renders, as YAML (file name -> text): policy.files, or the
placeholder policy.default while policy.files is empty.
*/}}
{{- define "enforcer.policyFiles" -}}
{{- if .Values.policy.files }}
{{- toYaml .Values.policy.files }}
{{- else }}
{{- toYaml (dict "default.yaml" .Values.policy.default) }}
{{- end }}
{{- end }}

{{/*
Pods that run at the same time in steady state: the HPA's minimum, or replicaCount.
*/}}
{{- define "enforcer.minPods" -}}
{{- if .Values.autoscaling.enabled }}
{{- .Values.autoscaling.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
Seconds a pod needs to stop cleanly: the preStop sleep, the in-flight grace, the audit drain
(rounded up) and a 5 second margin for process exit.
*/}}
{{- define "enforcer.requiredGraceSeconds" -}}
{{- $drain := .Values.audit.drainSeconds | float64 | ceil | int }}
{{- add (.Values.shutdown.preStopSleepSeconds | int) (.Values.shutdown.graceSeconds | int) $drain 5 }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the explicit value when it is long enough, else computed.
*/}}
{{- define "enforcer.terminationGracePeriodSeconds" -}}
{{- $required := include "enforcer.requiredGraceSeconds" . | int }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- $required }}
{{- else }}
{{- $given := .Values.terminationGracePeriodSeconds | int }}
{{- if lt $given $required }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least shutdown.preStopSleepSeconds + shutdown.graceSeconds + audit.drainSeconds + 5 = %d; leave it null to compute it" $given $required) }}
{{- end }}
{{- $given }}
{{- end }}
{{- end }}

{{/*
Checks across values that the schema cannot express.
*/}}
{{- define "enforcer.validate" -}}
{{- if eq (.Values.containerPorts.http | int) (.Values.containerPorts.admin | int) }}
{{- fail "containerPorts.http and containerPorts.admin must differ" }}
{{- end }}
{{- if eq (.Values.service.ports.http | int) (.Values.service.ports.admin | int) }}
{{- fail "service.ports.http and service.ports.admin must differ" }}
{{- end }}
{{- if and .Values.replayStore.url .Values.replayStore.existingSecret }}
{{- fail "replayStore: set either url or existingSecret, not both" }}
{{- end }}
{{- if and (not .Values.policy.existingConfigMap) (not .Values.policy.files) (not .Values.policy.default) }}
{{- fail "policy: give policy.files or policy.existingConfigMap" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- $shared := or (gt (include "enforcer.minPods" . | int) 1) .Values.autoscaling.enabled (gt (.Values.workers | int) 1) }}
{{- if and $shared (not (or .Values.replayStore.url .Values.replayStore.existingSecret)) }}
{{- range $resource := include "enforcer.nonceResources" . | fromYamlArray }}
{{- fail (printf "resource %s requires signature nonces (require_nonce: true) and more than one pod or worker runs: each would remember only its own nonces, so a request could be replayed to another; set replayStore.url or replayStore.existingSecret (Redis)" $resource) }}
{{- end }}
{{- range $resource := include "enforcer.sessionResources" . | fromYamlArray }}
{{- fail (printf "MCP resource %s binds sessions to their callers and more than one pod or worker runs: each would know only the sessions it saw issued, and the others would answer 404; set replayStore.url or replayStore.existingSecret (Redis), or mcp: {bind_sessions: false}" $resource) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Ids of the resources in policy.files (or the default policy) whose signatures require nonces,
as a YAML list. A policy from an existing ConfigMap cannot be read here; NOTES warns instead.
*/}}
{{- define "enforcer.nonceResources" -}}
{{- $ids := list }}
{{- range include "enforcer.policyResources" . | fromYamlArray }}
{{- if and (kindIs "map" .signatures) (eq (toString .signatures.require_nonce) "true") }}
{{- $ids = append $ids (toString .id) }}
{{- end }}
{{- end }}
{{- toYaml $ids }}
{{- end }}

{{/*
Ids of the MCP resources in policy.files (or the default policy) that bind sessions to their
callers, as a YAML list: `mcp: true`, `mcp: {...}` without `bind_sessions: false`, or no `mcp`
key and a rule with an `mcp` condition (the same test as the policy loader's).
*/}}
{{- define "enforcer.sessionResources" -}}
{{- $ids := list }}
{{- range include "enforcer.policyResources" . | fromYamlArray }}
{{- $mcp := false }}
{{- if kindIs "map" .mcp }}
{{- $mcp = ne (toString .mcp.bind_sessions) "false" }}
{{- else if kindIs "bool" .mcp }}
{{- $mcp = .mcp }}
{{- else if kindIs "slice" .rules }}
{{- range .rules }}
{{- if and (kindIs "map" .) (hasKey . "mcp") }}
{{- $mcp = true }}
{{- end }}
{{- end }}
{{- end }}
{{- if $mcp }}
{{- $ids = append $ids (toString .id) }}
{{- end }}
{{- end }}
{{- toYaml $ids }}
{{- end }}

{{/*
The resources (mappings) of the policy files the chart renders, as a YAML list; empty with
an existing ConfigMap, which cannot be read at render time.
*/}}
{{- define "enforcer.policyResources" -}}
{{- $resources := list }}
{{- if not .Values.policy.existingConfigMap }}
{{- range $file, $text := include "enforcer.policyFiles" . | fromYaml }}
{{- $doc := fromYaml $text }}
{{- if kindIs "slice" $doc.resources }}
{{- range $doc.resources }}
{{- if kindIs "map" . }}
{{- $resources = append $resources . }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $resources }}
{{- end }}
