//! Conversion of the removed Ingress APIs (`extensions/v1beta1`, `networking.k8s.io/v1beta1`)
//! to `networking.k8s.io/v1`, for old manifests such as the classic walkthrough's, and the
//! `pingress convert` command that prints v1 manifests for a real cluster.
//!
//! What changes: `spec.backend` becomes `spec.defaultBackend`; `serviceName`/`servicePort`
//! become `service: {name, port: {number | name}}`; a path without `pathType` gets
//! `ImplementationSpecific`, and an empty path becomes `/` (all paths, as nginx read it).

use serde_yaml::{Mapping, Value};

/// Ingress apiVersions that are converted.
pub const LEGACY_INGRESS_VERSIONS: &[&str] = &["extensions/v1beta1", "networking.k8s.io/v1beta1"];

fn convert_backend(b: &Value, at: &str) -> Result<Value, String> {
    let Some(m) = b.as_mapping() else {
        return Err(format!("{at}: backend must be a mapping"));
    };
    if let Some(resource) = m.get("resource") {
        let mut out = Mapping::new();
        out.insert("resource".into(), resource.clone());
        return Ok(Value::Mapping(out));
    }
    let name = m
        .get("serviceName")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}: backend has no serviceName"))?;
    let port = match m.get("servicePort") {
        Some(Value::Number(n)) => {
            let mut p = Mapping::new();
            p.insert("number".into(), Value::Number(n.clone()));
            p
        }
        Some(Value::String(s)) => {
            let mut p = Mapping::new();
            match s.parse::<i64>() {
                Ok(n) => p.insert("number".into(), n.into()),
                Err(_) => p.insert("name".into(), s.clone().into()),
            };
            p
        }
        _ => return Err(format!("{at}: backend has no servicePort")),
    };
    let mut svc = Mapping::new();
    svc.insert("name".into(), name.into());
    svc.insert("port".into(), Value::Mapping(port));
    let mut out = Mapping::new();
    out.insert("service".into(), Value::Mapping(svc));
    Ok(Value::Mapping(out))
}

/// Convert one legacy Ingress document to `networking.k8s.io/v1`.
pub fn convert_ingress(doc: &Value) -> Result<Value, String> {
    let mut out = doc.clone();
    out["apiVersion"] = "networking.k8s.io/v1".into();
    let Some(spec) = doc.get("spec").and_then(Value::as_mapping) else {
        return Ok(out);
    };
    let mut new_spec = spec.clone();
    if let Some(b) = new_spec.remove("backend") {
        new_spec.insert(
            "defaultBackend".into(),
            convert_backend(&b, "spec.backend")?,
        );
    }
    if let Some(Value::Sequence(rules)) = new_spec.get_mut("rules") {
        for (ri, rule) in rules.iter_mut().enumerate() {
            let Some(Value::Sequence(paths)) =
                rule.get_mut("http").and_then(|h| h.get_mut("paths"))
            else {
                continue;
            };
            for (pi, p) in paths.iter_mut().enumerate() {
                let at = format!("spec.rules[{ri}].http.paths[{pi}]");
                let Some(pm) = p.as_mapping_mut() else {
                    return Err(format!("{at}: must be a mapping"));
                };
                let backend = pm
                    .get("backend")
                    .ok_or_else(|| format!("{at}: no backend"))?;
                let backend = convert_backend(backend, &format!("{at}.backend"))?;
                pm.insert("backend".into(), backend);
                let empty = pm
                    .get("path")
                    .is_none_or(|v| v.is_null() || v.as_str() == Some(""));
                if empty {
                    pm.insert("path".into(), "/".into());
                }
                if !pm.contains_key("pathType") {
                    pm.insert("pathType".into(), "ImplementationSpecific".into());
                }
            }
        }
    }
    out["spec"] = Value::Mapping(new_spec);
    Ok(out)
}

/// Whether a document is a legacy Ingress.
pub fn is_legacy_ingress(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("Ingress")
        && doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| LEGACY_INGRESS_VERSIONS.contains(&v))
}

/// `pingress convert`: the text with every legacy Ingress document replaced by its v1 form
/// (other documents are kept as written). With `class`, converted Ingresses get
/// `spec.ingressClassName` and lose the legacy class annotation.
pub fn convert_text(text: &str, origin: &str, class: Option<&str>) -> Result<String, String> {
    let mut out = String::new();
    for (line, doc) in super::files::split_documents(text) {
        let value: Value =
            serde_yaml::from_str(doc).map_err(|e| format!("{origin}:{line}: {e}"))?;
        if !out.is_empty() {
            out.push_str("---\n");
        }
        if !is_legacy_ingress(&value) {
            out.push_str(doc.trim_end_matches('\n'));
            out.push('\n');
            continue;
        }
        let mut v = convert_ingress(&value).map_err(|e| format!("{origin}:{line}: {e}"))?;
        if let Some(class) = class {
            v["spec"]["ingressClassName"] = class.into();
            if let Some(a) = v
                .get_mut("metadata")
                .and_then(|m| m.get_mut("annotations"))
                .and_then(Value::as_mapping_mut)
            {
                a.remove(crate::translate::CLASS_ANNOTATION);
                if a.is_empty() {
                    v["metadata"]
                        .as_mapping_mut()
                        .map(|m| m.remove("annotations"));
                }
            }
        }
        out.push_str(&serde_yaml::to_string(&v).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALKTHROUGH: &str = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata:\n  name: ingress-myapp\n  namespace: default\n  annotations:\n    kubernetes.io/ingress.class: \"nginx\"\nspec:\n  rules:\n  - host: tomcat.lucky.com\n    http:\n      paths:\n      - path:\n        backend:\n          serviceName: myapp\n          servicePort: 80\n";

    #[test]
    fn walkthrough_ingress_converts_to_v1() {
        let v: Value = serde_yaml::from_str(WALKTHROUGH).unwrap();
        assert!(is_legacy_ingress(&v));
        let c = convert_ingress(&v).unwrap();
        assert_eq!(c["apiVersion"], "networking.k8s.io/v1");
        let p = &c["spec"]["rules"][0]["http"]["paths"][0];
        assert_eq!(p["path"], "/");
        assert_eq!(p["pathType"], "ImplementationSpecific");
        assert_eq!(p["backend"]["service"]["name"], "myapp");
        assert_eq!(p["backend"]["service"]["port"]["number"], 80);
        let typed: k8s_openapi::api::networking::v1::Ingress = serde_yaml::from_value(c).unwrap();
        assert_eq!(typed.metadata.name.as_deref(), Some("ingress-myapp"));
    }

    #[test]
    fn default_backend_and_named_ports_convert() {
        let v: Value = serde_yaml::from_str("apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata: {name: x}\nspec:\n  backend: {serviceName: my-svc, servicePort: http}\n").unwrap();
        let c = convert_ingress(&v).unwrap();
        assert_eq!(
            c["spec"]["defaultBackend"]["service"]["port"]["name"],
            "http"
        );
        assert!(c["spec"].get("backend").is_none());
    }

    #[test]
    fn missing_service_name_is_an_error_naming_the_field() {
        let v: Value = serde_yaml::from_str("apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: x}\nspec:\n  rules:\n  - http:\n      paths:\n      - backend: {servicePort: 80}\n").unwrap();
        let e = convert_ingress(&v).unwrap_err();
        assert!(e.contains("spec.rules[0].http.paths[0].backend"), "{e}");
    }

    #[test]
    fn convert_text_keeps_other_documents_and_can_set_the_class() {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}  # kept\n---\n{WALKTHROUGH}"
        );
        let out = convert_text(&text, "f", Some("pingress")).unwrap();
        assert!(out.contains("metadata: {name: s}  # kept"));
        assert!(out.contains("apiVersion: networking.k8s.io/v1\n"));
        assert!(out.contains("ingressClassName: pingress"));
        assert!(!out.contains("kubernetes.io/ingress.class"));
        let plain = convert_text(&text, "f", None).unwrap();
        assert!(plain.contains("kubernetes.io/ingress.class"));
    }
}
