{{/* Chart name, overridable. */}}
{{- define "popgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full resource name: <release>-<chart>, or the release name alone when it
already contains the chart name. */}}
{{- define "popgate.fullname" -}}
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

{{- define "popgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "popgate.labels" -}}
helm.sh/chart: {{ include "popgate.chart" . }}
{{ include "popgate.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: popgate
{{- end -}}

{{/* The pod selector; never change it in an upgrade. */}}
{{- define "popgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "popgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "popgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "popgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "popgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding tls.crt and tls.key. */}}
{{- define "popgate.tlsSecretName" -}}
{{- if .Values.tls.secretName -}}
{{- .Values.tls.secretName -}}
{{- else if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "popgate.fullname" .) -}}
{{- else -}}
{{- fail "tls.enabled needs tls.secretName (an existing kubernetes.io/tls Secret) or tls.certManager.enabled" -}}
{{- end -}}
{{- end -}}

{{/* Whether the native preStop sleep action can be used (Kubernetes 1.30+,
where the PodLifecycleSleepAction feature is on by default). */}}
{{- define "popgate.preStopSleep" -}}
{{- if and (gt (int .Values.drain.preStopSleepSeconds) 0) (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) -}}
{{- int .Values.drain.preStopSleepSeconds -}}
{{- else -}}
0
{{- end -}}
{{- end -}}

{{- define "popgate.terminationGracePeriodSeconds" -}}
{{- $floor := add (include "popgate.preStopSleep" . | int) (int .Values.drain.timeoutSeconds) -}}
{{- if kindIs "invalid" .Values.drain.terminationGracePeriodSeconds -}}
{{- add $floor 5 -}}
{{- else if le (int .Values.drain.terminationGracePeriodSeconds) $floor -}}
{{- fail (printf "drain.terminationGracePeriodSeconds (%d) must be larger than drain.preStopSleepSeconds + drain.timeoutSeconds (%d), or sessions are killed mid-drain" (int .Values.drain.terminationGracePeriodSeconds) $floor) -}}
{{- else -}}
{{- int .Values.drain.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* The TCP port of the IMAP upstream, from config.upstream.address. */}}
{{- define "popgate.upstreamPort" -}}
{{- regexFind "[0-9]+$" .Values.config.upstream.address -}}
{{- end -}}

{{/* Where popgate's state is: "redis" (state.redis.url), "embedded" (the
store on the PersistentVolumeClaim) or "" (state.enabled off). */}}
{{- define "popgate.stateBackend" -}}
{{- if .Values.state.enabled -}}
{{- if .Values.state.redis.url -}}redis{{- else -}}embedded{{- end -}}
{{- end -}}
{{- end -}}

{{/* The TCP port of the Redis server, from state.redis.url (6379 when the
URL names none). */}}
{{- define "popgate.redisPort" -}}
{{- $hostport := regexReplaceAll "^[a-z]+://([^/@]*@)?([^/?#]*).*$" .Values.state.redis.url "${2}" -}}
{{- default "6379" (regexFind ":[0-9]+$" $hostport | trimPrefix ":") -}}
{{- end -}}

{{/* Where the Secret with the Redis password is mounted, and the file. */}}
{{- define "popgate.redisSecretDir" -}}/etc/popgate/redis{{- end -}}
{{- define "popgate.redisPasswordFile" -}}{{ include "popgate.redisSecretDir" . }}/password{{- end -}}

{{/* Where the TLS Secret is mounted. */}}
{{- define "popgate.tlsDir" -}}/etc/popgate/tls{{- end -}}

{{/* popgate.yaml, from the values. */}}
{{- define "popgate.config" -}}
{{- $c := .Values.config -}}
{{- $tls := .Values.tls.enabled -}}
{{- $listeners := list -}}
{{- $pop3 := dict "name" "pop3" "address" (printf "%s:%d" $c.bindAddress (int .Values.ports.pop3)) "tls" "none" -}}
{{- if and $tls .Values.tls.starttls -}}
{{- $_ := set $pop3 "tls" "starttls" -}}
{{- end -}}
{{- $listeners = append $listeners $pop3 -}}
{{- if $tls -}}
{{- $listeners = append $listeners (dict "name" "pop3s" "address" (printf "%s:%d" $c.bindAddress (int .Values.ports.pop3s)) "tls" "implicit") -}}
{{- end -}}
{{- if .Values.proxyProtocol.enabled -}}
{{- if not .Values.proxyProtocol.trustedCidrs -}}
{{- fail "proxyProtocol.enabled needs proxyProtocol.trustedCidrs (the load balancers' networks)" -}}
{{- end -}}
{{- range $listeners -}}
{{- $_ := set . "proxy_protocol" true -}}
{{- $_ := set . "proxy_trusted" $.Values.proxyProtocol.trustedCidrs -}}
{{- end -}}
{{- end -}}
{{- $upstream := dict
  "address" $c.upstream.address
  "tls" $c.upstream.tls
  "connect_timeout" $c.upstream.connectTimeout
  "timeout" $c.upstream.timeout
  "health_check_interval" $c.upstream.healthCheckInterval
  "max_connections" (int $c.upstream.maxConnections)
  "forward_client_ip" $c.upstream.forwardClientIp
  "pool" (int $c.upstream.pool)
  "pool_max_age" $c.upstream.poolMaxAge
-}}
{{- with $c.upstream.caFile -}}
{{- $_ := set $upstream "ca_file" . -}}
{{- end -}}
{{- with $c.upstream.serverName -}}
{{- $_ := set $upstream "server_name" . -}}
{{- end -}}
{{- with $c.upstream.oauth2 -}}
{{- $_ := set $upstream "oauth2" . -}}
{{- end -}}
{{- $cfg := dict
  "listeners" $listeners
  "upstream" $upstream
  "mailbox" $c.mailbox
  "delete" (dict
    "action" $c.delete.action
    "folder" $c.delete.folder
    "keyword" $c.delete.keyword)
  "client_workarounds" $c.clientWorkarounds
  "policy" (dict "login_delay" $c.policy.loginDelay)
  "uidl_format" $c.uidlFormat
  "session" (dict
    "idle_timeout" $c.session.idleTimeout
    "max_line_length" (int $c.session.maxLineLength)
    "max_connections" (int $c.session.maxConnections)
    "mark_seen" $c.session.markSeen
    "exclusive" $c.session.exclusive
    "max_messages" (int $c.session.maxMessages))
  "auth" (dict
    "plaintext_networks" $c.auth.plaintextNetworks
    "client_master_login" $c.auth.clientMasterLogin)
  "limits" (dict
    "connections_per_ip" (int $c.limits.connectionsPerIp)
    "sessions_per_user" (int $c.limits.sessionsPerUser)
    "auth_failures_per_connection" (int $c.limits.authFailuresPerConnection)
    "auth_penalty_max" $c.limits.authPenaltyMax
    "auth_penalty_memory" (int $c.limits.authPenaltyMemory)
    "auth_penalty_ipv6_prefix" (int $c.limits.authPenaltyIpv6Prefix)
    "auth_attempts_queued_per_user" (int $c.limits.authAttemptsQueuedPerUser)
    "login_timeout" $c.limits.loginTimeout)
  "metrics" (dict
    "address" (printf "%s:%d" $c.bindAddress (int .Values.ports.metrics))
    "header_read_timeout" $c.metrics.headerReadTimeout
    "max_connections" (int $c.metrics.maxConnections)
    "max_connections_per_ip" (int $c.metrics.maxConnectionsPerIp))
  "shutdown" (dict "drain_timeout" (printf "%ds" (int .Values.drain.timeoutSeconds)))
  "log" (dict "format" $c.log.format "level" $c.log.level)
-}}
{{- if not (kindIs "invalid" $c.policy.expire) -}}
{{- $_ := set $cfg.policy "expire" (int $c.policy.expire) -}}
{{- end -}}
{{- if $tls -}}
{{- $_ := set $cfg "tls" (dict
  "certificate" (printf "%s/tls.crt" (include "popgate.tlsDir" .))
  "key" (printf "%s/tls.key" (include "popgate.tlsDir" .))
  "reload_interval" .Values.tls.reloadInterval) -}}
{{- end -}}
{{- $backend := include "popgate.stateBackend" . -}}
{{- if eq $backend "redis" -}}
{{- $r := .Values.state.redis -}}
{{- $redis := dict
  "url" $r.url
  "key_prefix" $r.keyPrefix
  "timeout" $r.timeout
  "lease" $r.lease
-}}
{{- if $r.existingSecret -}}
{{- $_ := set $redis "password_file" (include "popgate.redisPasswordFile" .) -}}
{{- end -}}
{{- $_ := set $cfg "state" (dict "redis" $redis "on_unavailable" .Values.state.onUnavailable) -}}
{{- else if eq $backend "embedded" -}}
{{- $_ := set $cfg "state" (dict "path" "/var/lib/popgate" "on_unavailable" .Values.state.onUnavailable) -}}
{{- end -}}
{{- $cfg = mustMergeOverwrite $cfg (deepCopy $c.extra) -}}
{{- toYaml $cfg -}}
{{- end -}}
