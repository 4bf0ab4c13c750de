{{/* Chart name. */}}
{{- define "emr-ray-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "emr-ray-operator.fullname" -}}
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

{{- define "emr-ray-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "emr-ray-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "emr-ray-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "emr-ray-operator.labels" -}}
helm.sh/chart: {{ include "emr-ray-operator.chart" . }}
{{ include "emr-ray-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "emr-ray-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "emr-ray-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The user name the API server sees for the operator. */}}
{{- define "emr-ray-operator.operatorUser" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "emr-ray-operator.serviceAccountName" .) }}
{{- end }}

{{- define "emr-ray-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "emr-ray-operator.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "emr-ray-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of cluster-scoped objects: unique per release name and namespace. */}}
{{- define "emr-ray-operator.clusterName" -}}
{{- printf "%s-%s" (include "emr-ray-operator.fullname" .) .Release.Namespace | trunc 200 | trimSuffix "-" }}
{{- end }}

{{/*
RBAC rules for the watched scope: exactly what the operator calls.
- EmrWorkspace: list/watch (controller; the orphan sweep also lists one by name, never get),
  patch status (server-side apply), update finalizers (only needed where
  OwnerReferencesPermissionEnforcement checks blockOwnerDeletion).
- EmrRayCluster: list/watch (label-filtered watch), create+patch (server-side apply creates
  and updates), delete (mirrors of gone clusters under goneClusterPolicy Delete, and orphaned
  mirrors whose workspace was deleted with --cascade=orphan, with a resourceVersion
  precondition; those of deleted workspaces go through the garbage collector, by owner
  reference); patch status.
- EmrRayJob (spec.jobs): list (by workspace label each round, never watched), create+patch
  (server-side apply), delete (jobs that left the retention window, and every job mirror of a
  workspace that turns jobs off); patch status.
- Secrets: get only, one by name when a sync reads its credentials (never list or watch: no
  Secret's data reaches the operator's caches).
- Events (events.k8s.io/v1): create, patch (series).
Namespaces are not in these rules: rbac.yaml's cluster-wide roles grant get on namespaces (the
labels EmrClusterCredentials' namespace selectors match) and, with shards, list/watch (each
shard selects its namespaces by label).
*/}}
{{- define "emr-ray-operator.rules" -}}
- apiGroups: ["emr.aliyun.io"]
  resources: ["emrworkspaces"]
  verbs: ["list", "watch"]
- apiGroups: ["emr.aliyun.io"]
  resources: ["emrworkspaces/status"]
  verbs: ["patch"]
- apiGroups: ["emr.aliyun.io"]
  resources: ["emrworkspaces/finalizers"]
  verbs: ["update"]
- apiGroups: ["emr.aliyun.io"]
  resources: ["emrrayclusters"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["emr.aliyun.io"]
  resources: ["emrrayclusters/status"]
  verbs: ["patch"]
# Job mirrors (spec.jobs): listed by workspace label each round, never watched; the orphan sweep
# lists the managed ones (paged) after a workspace is deleted and every 5 minutes.
- apiGroups: ["emr.aliyun.io"]
  resources: ["emrrayjobs"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["emr.aliyun.io"]
  resources: ["emrrayjobs/status"]
  verbs: ["patch"]
# Secrets are only read one at a time, by name: never listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
Sharding (values "shards"): one Deployment, Lease, metrics Service and PodDisruptionBudget per
shard, plus the default ones. Each of those templates renders once per instance, with a
context of Values, Release, Chart and "shard" (nil for the default instance). With no shards,
only the default instance is rendered, exactly as without sharding.
*/}}
{{- define "emr-ray-operator.shardKey" -}}sharding.emr.aliyun.io/key{{- end }}
{{/* Pod label telling the shards' pods apart (selectors of Deployments, Services, PDBs). */}}
{{- define "emr-ray-operator.shardPodLabel" -}}emr.aliyun.io/shard{{- end }}

{{/* Name suffix of an instance: "" for the default one, "-<shard>" for a shard. */}}
{{- define "emr-ray-operator.shardSuffix" -}}
{{- with .shard }}-{{ .name }}{{ end }}
{{- end }}

{{/* Value of the pod shard label: the shard's name, "default" for the default instance. */}}
{{- define "emr-ray-operator.shardName" -}}
{{- if .shard }}{{ .shard.name }}{{ else }}default{{ end }}
{{- end }}

{{/* Extra labels of a sharded instance's objects and pods (none without sharding). */}}
{{- define "emr-ray-operator.shardLabels" -}}
{{- if .Values.shards -}}
{{ include "emr-ray-operator.shardPodLabel" . }}: {{ include "emr-ray-operator.shardName" . }}
{{- end }}
{{- end }}

{{/* Replicas of an instance (a shard may override them). */}}
{{- define "emr-ray-operator.replicas" -}}
{{- if and .shard (hasKey .shard "replicas") }}{{ .shard.replicas }}{{ else }}{{ .Values.replicas }}{{ end }}
{{- end }}

{{/* The namespaces whose workspaces an instance serves (SHARD_SELECTOR, on the Namespace's
label); the default one serves every namespace without a known shard label, so that none is
left unserved. */}}
{{- define "emr-ray-operator.shardSelector" -}}
{{- $key := include "emr-ray-operator.shardKey" . }}
{{- if .shard }}
{{- printf "%s=%s" $key .shard.name }}
{{- else }}
{{- $names := list }}
{{- range .Values.shards }}{{ $names = append $names .name }}{{ end }}
{{- printf "%s notin (%s)" $key (join "," $names) }}
{{- end }}
{{- end }}

{{/* Lease of an instance: the default lease name, "-<shard>" appended for a shard. */}}
{{- define "emr-ray-operator.instanceLeaseName" -}}
{{- include "emr-ray-operator.leaseName" . }}{{ include "emr-ray-operator.shardSuffix" . }}
{{- end }}

{{/* Every instance's lease name, quoted and comma-separated (the leader-election Role). */}}
{{- define "emr-ray-operator.leaseNames" -}}
{{- $names := list (include "emr-ray-operator.leaseName" . | quote) }}
{{- range .Values.shards }}
{{- $names = append $names (printf "%s-%s" (include "emr-ray-operator.leaseName" $) .name | quote) }}
{{- end }}
{{- join ", " $names }}
{{- end }}

{{/* The Secret holding the metrics serving certificate (metrics.secure): metrics.tls.secretName,
else cert-manager's when metrics.tls.certManager.enabled, else none (the operator generates a
self-signed certificate). */}}
{{- define "emr-ray-operator.metricsTlsSecret" -}}
{{- if .Values.metrics.secure }}
{{- if .Values.metrics.tls.secretName }}
{{- .Values.metrics.tls.secretName }}
{{- else if .Values.metrics.tls.certManager.enabled }}
{{- printf "%s-metrics-tls" (include "emr-ray-operator.fullname" .) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The metrics Service of the default instance, by its in-cluster DNS name (what the
ServiceMonitor verifies the certificate against). */}}
{{- define "emr-ray-operator.metricsServiceHost" -}}
{{- printf "%s-metrics.%s.svc" (include "emr-ray-operator.fullname" .) .Release.Namespace }}
{{- end }}

{{/* Where the metrics certificate's Secret is mounted. */}}
{{- define "emr-ray-operator.metricsCertDir" -}}/var/run/secrets/emr-ray-operator/metrics-tls{{- end }}
