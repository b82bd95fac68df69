{{/*
The names other parts of weft expect: the injector's defaults, the
ConfigMap injected proxies mount and the webhook configuration weft-control
patches are fixed names, so the chart does not prefix them with the release.
*/}}
{{- define "weft.controlName" -}}weft-control{{- end }}
{{- define "weft.webhookName" -}}weft-injector{{- end }}
{{- define "weft.anchorsName" -}}weft-trust-anchors{{- end }}

{{/* The Secret weft-control reads its issuer from. */}}
{{- define "weft.issuerSecret" -}}
{{- .Values.identity.issuer.externalSecret | default "weft-issuer" -}}
{{- end }}

{{/* Refuses an install without an issuer, saying how to make one. */}}
{{- define "weft.requireIssuer" -}}
{{- $i := .Values.identity -}}
{{- if not $i.issuer.externalSecret -}}
{{- if or (not $i.trustAnchorsPEM) (not $i.issuer.crtPEM) (not $i.issuer.keyPEM) -}}
{{- fail "weft needs an issuer: run `weft identity init --out ca` and install with --set-file identity.trustAnchorsPEM=ca/ca.crt --set-file identity.issuer.crtPEM=ca/tls.crt --set-file identity.issuer.keyPEM=ca/tls.key, or set identity.issuer.externalSecret to a kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt) such as cert-manager's (see the chart README)" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "weft.labels" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weft
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "weft.controlSelector" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/component: control
{{- end }}

{{- define "weft.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .appVersion) -}}
{{- end }}
