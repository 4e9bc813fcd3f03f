//! `pingress check`: the migration report. For each Ingress of ours, every
//! ingress-nginx annotation is classified (applied, differs, ignored, invalid) and every
//! other diagnostic listed, then one summary line; as text or JSON. The objects come from a
//! manifests directory or from a cluster, read with one list per kind (no watch, no write).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::source::{ObjKey, Snapshot};
use crate::translate::annotations::{verdict_message, Status, Verdict};
use crate::translate::Translation;

/// The report on one Ingress.
#[derive(Debug, Serialize)]
pub struct IngressReport {
    pub ingress: String,
    /// `served`, or `refused` when its annotations make ingress-nginx drop it.
    pub state: &'static str,
    pub annotations: Vec<Verdict>,
    /// Diagnostics other than the annotation verdicts (backends, paths, conflicts, ...).
    pub diagnostics: Vec<String>,
}

/// Counts over the whole report.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub ingresses: usize,
    pub annotations: usize,
    pub applied: usize,
    pub differs: usize,
    pub ignored: usize,
    pub invalid: usize,
    pub refused: usize,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ingresses: Vec<IngressReport>,
    /// Gateway API: every status condition of our GatewayClasses, Gateways and routes, one
    /// line each (`Kind ns/name ...: Type=Status (Reason): message`).
    pub gateway_api: Vec<String>,
    pub summary: Summary,
}

impl Report {
    pub fn new(t: &Translation) -> Report {
        // Diagnostics that repeat a verdict or the refusal are shown as those; the rest
        // (backends, paths, conflicts, other annotation consequences) are listed as notes.
        let mut other: BTreeMap<&ObjKey, Vec<String>> = BTreeMap::new();
        for d in &t.diagnostics {
            let Some(k) = &d.ingress else { continue };
            let verdict = t
                .annotations
                .get(k)
                .is_some_and(|vs| vs.iter().any(|v| verdict_message(v) == d.message));
            let refusal = t
                .refused
                .get(k)
                .is_some_and(|why| d.message.contains(why.as_str()));
            if !verdict && !refusal {
                other.entry(k).or_default().push(d.message.clone());
            }
        }
        let mut summary = Summary::default();
        let mut ingresses = Vec::new();
        for key in &t.ingresses {
            let verdicts = t.annotations.get(key).cloned().unwrap_or_default();
            for v in &verdicts {
                summary.annotations += 1;
                match v.status {
                    Status::Applied => summary.applied += 1,
                    Status::Differs => summary.differs += 1,
                    Status::Ignored => summary.ignored += 1,
                    Status::Invalid => summary.invalid += 1,
                }
            }
            let refused = t.refused.contains_key(key);
            summary.refused += usize::from(refused);
            summary.ingresses += 1;
            ingresses.push(IngressReport {
                ingress: key.to_string(),
                state: if refused { "refused" } else { "served" },
                annotations: verdicts,
                diagnostics: other.remove(key).unwrap_or_default(),
            });
        }
        Report {
            ingresses,
            gateway_api: t.gateway.lines(),
            summary,
        }
    }

    /// Whether every annotation behaves as it does under ingress-nginx.
    pub fn all_same(&self) -> bool {
        let s = &self.summary;
        s.differs == 0 && s.ignored == 0 && s.invalid == 0 && s.refused == 0
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for i in &self.ingresses {
            out.push_str(&format!("ingress {} ({})\n", i.ingress, i.state));
            for v in &i.annotations {
                out.push_str(&format!(
                    "  {:<8} {}: {}",
                    v.status.as_str(),
                    v.key,
                    v.value
                ));
                if !v.note.is_empty() {
                    out.push_str(&format!("\n           {}", v.note));
                }
                out.push('\n');
            }
            for d in &i.diagnostics {
                out.push_str(&format!("  note     {d}\n"));
            }
        }
        for line in &self.gateway_api {
            out.push_str(&format!("gateway-api {line}\n"));
        }
        let s = &self.summary;
        out.push_str(&format!(
            "summary: {} ingresses, {} annotations: {} applied, {} differ, {} ignored, {} invalid; {} ingresses refused\n",
            s.ingresses, s.annotations, s.applied, s.differs, s.ignored, s.invalid, s.refused
        ));
        out
    }
}

/// Read the Ingress-related objects of a cluster once: one list per kind, nothing watched
/// or written. `namespaces` empty: all namespaces.
pub async fn list_cluster(client: kube::Client, namespaces: &[String]) -> Result<Snapshot, String> {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
    use kube::api::{Api, ListParams};
    use std::sync::Arc;

    use crate::source::Object;

    let lp = ListParams::default();
    let mut snap = Snapshot::default();
    let classes: Api<IngressClass> = Api::all(client.clone());
    for c in classes
        .list(&lp)
        .await
        .map_err(|e| format!("list ingressclasses: {e}"))?
    {
        snap.insert(Object::IngressClass(Arc::new(c)));
    }
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    for ns in scopes {
        let ingresses: Api<Ingress> = match ns {
            Some(n) => Api::namespaced(client.clone(), n),
            None => Api::all(client.clone()),
        };
        for i in ingresses
            .list(&lp)
            .await
            .map_err(|e| format!("list ingresses: {e}"))?
        {
            snap.insert(Object::Ingress(Arc::new(i)));
        }
        let services: Api<Service> = match ns {
            Some(n) => Api::namespaced(client.clone(), n),
            None => Api::all(client.clone()),
        };
        for s in services
            .list(&lp)
            .await
            .map_err(|e| format!("list services: {e}"))?
        {
            snap.insert(Object::Service(Arc::new(s)));
        }
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::files::parse_manifests;
    use crate::translate::{translate, TranslateConf};

    #[test]
    fn diagnostics_that_are_not_verdicts_are_listed_as_notes() {
        let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/custom-http-errors: "404"
    nginx.ingress.kubernetes.io/proxy-read-timeout: 60s
spec:
  ingressClassName: pingress
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
"#;
        let mut snap = Snapshot::default();
        for o in parse_manifests(yaml, "test").unwrap().objects {
            snap.insert(o);
        }
        let conf = TranslateConf::from(&crate::config::PingressConf::default());
        let t = translate(&snap, &conf);
        let r = Report::new(&t);
        let notes = &r.ingresses[0].diagnostics;
        // The verdict (invalid timeout) is not repeated as a note ...
        assert!(
            !notes.iter().any(|n| n.contains("proxy-read-timeout")),
            "{notes:?}"
        );
        // ... but consequences that are no verdict are: no error backend, missing Service.
        assert!(
            notes.iter().any(|n| n.contains("passed through")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("service shop/missing not found")),
            "{notes:?}"
        );
    }
}
