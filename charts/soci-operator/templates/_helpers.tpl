{{/* Names and labels shared by the templates. */}}
{{- define "soci-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "soci-operator.fullname" -}}
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

{{- define "soci-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "soci-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "soci-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "soci-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: soci-operator
{{- end }}

{{- define "soci-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "soci-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}, falling back to the operator image. */}}
{{- define "soci-operator.imageRef" -}}
{{- $root := index . 0 }}
{{- $img := index . 1 }}
{{- if not $img.repository }}
{{- include "soci-operator.image" $root }}
{{- else if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{- define "soci-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "soci-operator.workerImage" -}}
{{- include "soci-operator.imageRef" (list . .Values.worker.image) }}
{{- end }}

{{- define "soci-operator.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "soci-operator.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/* The namespace of the helm test's SociIndex: one the operator watches. */}}
{{- define "soci-operator.testNamespace" -}}
{{- if or (not .Values.watchNamespaces) (has .Release.Namespace .Values.watchNamespaces) }}
{{- .Release.Namespace }}
{{- else }}
{{- first .Values.watchNamespaces }}
{{- end }}
{{- end }}

{{/* The rules the controller needs wherever it watches SociIndexes (see the README's RBAC). Each
comment says what calls it; nothing is granted that the controller does not call, and
e2e/chart-tests checks the verbs. Worker Pods get none of this: they run with the namespace's
default ServiceAccount and no token. */}}
{{- define "soci-operator.rules" -}}
# SociIndexes: the watch (list, watch), reads (get); patch adds and removes the soci.dev/cleanup
# finalizer. The spec is never written.
- apiGroups: [soci.dev]
  resources: [sociindexes]
  verbs: [get, list, watch, patch]
# The status: read (get) and written with server-side apply (patch).
- apiGroups: [soci.dev]
  resources: [sociindexes/status]
  verbs: [get, patch]
# Worker Jobs carry an ownerReference with blockOwnerDeletion to their SociIndex; where the
# OwnerReferencesPermissionEnforcement admission plugin is on, that needs update here.
- apiGroups: [soci.dev]
  resources: [sociindexes/finalizers]
  verbs: [update]
# Worker Jobs: watched (the Job caps, build results), created for builds, deleted when obsolete,
# retried, or before a cleanup.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete]
# The Pods of a finished worker Job: listed to read the worker's result (termination message).
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Registry credentials named by spec.credentials.secretRefs: read one by name, never listed.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events about SociIndexes (events.k8s.io/v1: create, and patch for a repeated one).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{- define "soci-operator.policyRules" -}}
# The policy controllers (cluster-wide installs only). The policies: watched, their status
# written by server-side apply, the reconcile-request annotation patched for a push event.
# Their child SociIndexes: created, updated by server-side apply, marked unused with a merge
# patch, deleted after the retention.
- apiGroups: [soci.dev]
  resources: [sociindexpolicies, clustersociindexpolicies]
  verbs: [get, list, watch, patch]
# The policies' status: read and written with server-side apply.
- apiGroups: [soci.dev]
  resources: [sociindexpolicies/status, clustersociindexpolicies/status]
  verbs: [get, patch]
# Child SociIndexes: created for a newly selected image, deleted after the retention.
- apiGroups: [soci.dev]
  resources: [sociindexes]
  verbs: [create, delete]
# The workloads source: Pods are watched (images, pull secrets, resolved digests).
- apiGroups: [""]
  resources: [pods]
  verbs: [watch]
# CronJobs' templates: listed (their Pods come and go).
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [list]
# Deployments', StatefulSets' and DaemonSets' templates: listed (also while they have no Pods).
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [list]
# ServiceAccounts (their imagePullSecrets): listed.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [list]
# Namespaces (by label): listed, and watched (metadata only) so that a label change wakes
# the cluster policies that select namespaces.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}

{{- define "soci-operator.metricsAddr" -}}
{{- $host := .Values.metrics.bindAddress }}
{{- if contains ":" $host }}{{ printf "[%s]:%v" $host .Values.metrics.port }}{{ else }}{{ printf "%s:%v" $host .Values.metrics.port }}{{ end }}
{{- end }}

{{/* The Secret holding the admission webhook's serving certificate. */}}
{{- define "soci-operator.webhookSecret" -}}
{{- .Values.admissionWebhook.certificates.secretName | default (printf "%s-webhook-tls" (include "soci-operator.fullname" .)) }}
{{- end }}
