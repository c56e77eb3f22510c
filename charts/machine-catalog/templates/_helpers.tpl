{{- /*
Hand-written (tools/gen_chart.py keeps this file): the TLS material of the server, which
no kustomize overlay holds as an object. Every other template is generated from manifests/.

"machine-catalog.tls" returns YAML {caCrt, tlsCrt, tlsKey}, each base64 PEM:
  provided      the PEM text in .Values.certificates.provided
  generate      the Secret already in the cluster (an upgrade keeps the CA the scheduler and
                the webhook trust), or a new CA + serving certificate (install, rotate: true,
                or `helm template`, which has no cluster to look in)
It is called once, in the webhook's template, which also writes the Secret: a generated CA
must be the same in the Secret and in the caBundle.
*/}}
{{- define "machine-catalog.tls" -}}
{{- $ns := "machine-catalog-system" -}}
{{- $svc := list "machine-catalog-webhook" "machine-catalog-extender" -}}
{{- if eq .Values.certificates.mode "provided" -}}
caCrt: {{ required "certificates.provided.caCrt is required with mode provided" .Values.certificates.provided.caCrt | b64enc }}
tlsCrt: {{ required "certificates.provided.tlsCrt is required with mode provided" .Values.certificates.provided.tlsCrt | b64enc }}
tlsKey: {{ required "certificates.provided.tlsKey is required with mode provided" .Values.certificates.provided.tlsKey | b64enc }}
{{- else if eq .Values.certificates.mode "generate" -}}
{{- $old := lookup "v1" "Secret" $ns "machine-catalog-tls" -}}
{{- if and $old (not .Values.certificates.generate.rotate) (hasKey ($old.data | default dict) "ca.crt") -}}
caCrt: {{ index $old.data "ca.crt" }}
tlsCrt: {{ index $old.data "tls.crt" }}
tlsKey: {{ index $old.data "tls.key" }}
{{- else -}}
{{- $names := list -}}
{{- range $svc -}}
{{- $names = append $names (printf "%s.%s.svc" . $ns) -}}
{{- $names = append $names (printf "%s.%s.svc.cluster.local" . $ns) -}}
{{- end -}}
{{- $ca := genCA "machine-catalog-ca" (int .Values.certificates.generate.caDays) -}}
{{- $cert := genSignedCert (first $names) nil $names (int .Values.certificates.generate.days) $ca -}}
caCrt: {{ $ca.Cert | b64enc }}
tlsCrt: {{ $cert.Cert | b64enc }}
tlsKey: {{ $cert.Key | b64enc }}
{{- end -}}
{{- else if ne .Values.certificates.mode "cert-manager" -}}
{{- fail (printf "certificates.mode must be generate, cert-manager or provided, not %q" .Values.certificates.mode) -}}
{{- end -}}
{{- end -}}

{{- /* The Secret the server mounts (tls.crt, tls.key) and the scheduler reads ca.crt from:
the same name and keys as the cert-manager overlay's Certificate writes. */}}
{{- define "machine-catalog.tlsSecret" -}}
apiVersion: v1
kind: Secret
type: kubernetes.io/tls
metadata:
  name: machine-catalog-tls
  namespace: machine-catalog-system
  labels:
    helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version }}
    app.kubernetes.io/managed-by: {{ .root.Release.Service }}
data:
  ca.crt: {{ .tls.caCrt }}
  tls.crt: {{ .tls.tlsCrt }}
  tls.key: {{ .tls.tlsKey }}
{{- end -}}
