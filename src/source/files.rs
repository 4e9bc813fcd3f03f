//! The manifests-directory source: reads every `*.yaml`/`*.yml` file of one directory
//! (multi-document files and `kind: List` allowed), keeps the objects of the kinds the
//! gateway uses, and re-reads files whose size or modification time changed.
//!
//! A file that fails to parse keeps its last good objects in force; its error (with file and
//! line) is reported until the file is fixed or removed. Other files are not affected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Object, Snapshot};
use crate::metrics::Metrics;

/// The Gateway API group's versions read from manifests (the v1.6 standard channel).
const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";
const GATEWAY_V1BETA1: &str = "gateway.networking.k8s.io/v1beta1";

/// What one manifest text holds.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    /// Documents skipped on purpose (unsupported apiVersion of a known kind, ...).
    pub warnings: Vec<String>,
}

/// Parse a manifest text; `origin` (usually the file path) prefixes every message, followed by
/// the line of the offending document.
pub fn parse_manifests(text: &str, origin: &str) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    for (start_line, doc) in split_documents(text) {
        let value: serde_yaml::Value = serde_yaml::from_str(doc)
            .or_else(|_| serde_yaml::from_str(&padded(doc, start_line)))
            .map_err(|e| format!("{origin}:{}: {e}", err_line(&e, start_line)))?;
        if value.is_null() {
            continue;
        }
        parse_value(value, Some(doc), origin, start_line, &mut parsed)?;
    }
    Ok(parsed)
}

/// A document preceded by the newlines before it, so that the YAML parser reports lines of
/// the whole file. Only for errors: parsing every document padded costs the whole file's
/// lines per document, quadratic in the file (a 50,000-Ingress file took minutes).
fn padded(doc: &str, start_line: usize) -> String {
    format!("{}{}", "\n".repeat(start_line - 1), doc)
}

fn err_line(e: &serde_yaml::Error, fallback: usize) -> usize {
    e.location().map(|l| l.line()).unwrap_or(fallback)
}

fn parse_value(
    value: serde_yaml::Value,
    text: Option<&str>,
    origin: &str,
    line: usize,
    parsed: &mut Parsed,
) -> Result<(), String> {
    let at = |msg: String| format!("{origin}:{line}: {msg}");
    if !value.is_mapping() {
        return Err(at("a manifest document must be a mapping".into()));
    }
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let kind = value.get("kind").and_then(|v| v.as_str());
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return Err(at("document has no apiVersion or kind".into()));
    };
    let (api_version, kind) = (api_version.to_string(), kind.to_string());
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    if kind != "List" && name.as_deref().is_none_or(str::is_empty) {
        return Err(at(format!("{kind} has no metadata.name")));
    }
    let name = name.unwrap_or_default();
    // Typed parse; from the text when we have it so errors carry the line.
    fn typed<T: DeserializeOwned>(
        value: serde_yaml::Value,
        text: Option<&str>,
        origin: &str,
        line: usize,
        what: &str,
    ) -> Result<T, String> {
        let r = match text {
            Some(t) => serde_yaml::from_str::<T>(t)
                .or_else(|_| serde_yaml::from_str::<T>(&padded(t, line))),
            None => serde_yaml::from_value::<T>(value),
        };
        r.map_err(|e| format!("{origin}:{}: {what}: {e}", err_line(&e, line)))
    }
    let what = format!("{kind} {name}");
    if super::legacy::is_legacy_ingress(&value) {
        let converted =
            super::legacy::convert_ingress(&value).map_err(|e| at(format!("{what}: {e}")))?;
        let ing: Ingress = serde_yaml::from_value(converted).map_err(|e| {
            at(format!(
                "{what}: after conversion to networking.k8s.io/v1: {e}"
            ))
        })?;
        let msg = format!(
            "{origin}:{line}: Ingress {name}: apiVersion {api_version} is deprecated and removed from Kubernetes; converted to networking.k8s.io/v1 (`pingress convert` prints v1 manifests)"
        );
        warn!("{msg}");
        parsed.warnings.push(msg);
        parsed.objects.push(Object::Ingress(Arc::new(ing)));
        return Ok(());
    }
    let obj = match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(Arc::new(typed::<Ingress>(
            value, text, origin, line, &what,
        )?)),
        ("networking.k8s.io/v1", "IngressClass") => {
            Object::IngressClass(Arc::new(typed::<IngressClass>(
                value, text, origin, line, &what,
            )?))
        }
        ("v1", "Service") => Object::Service(Arc::new(typed::<Service>(
            value, text, origin, line, &what,
        )?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(Arc::new(typed::<EndpointSlice>(
                value, text, origin, line, &what,
            )?))
        }
        ("v1", "Secret") => {
            let secret = typed::<Secret>(value, text, origin, line, &what)?;
            if !super::kept_secret_type(secret.type_.as_deref()) {
                debug!(
                    origin,
                    name, "ignoring Secret that is neither kubernetes.io/tls nor Opaque"
                );
                return Ok(());
            }
            Object::Secret(Arc::new(secret))
        }
        ("v1", "Namespace") => {
            Object::Namespace(Arc::new(typed(value, text, origin, line, &what)?))
        }
        (GATEWAY_V1, "GatewayClass") => {
            Object::GatewayClass(Arc::new(typed(value, text, origin, line, &what)?))
        }
        (GATEWAY_V1, "Gateway") => {
            Object::Gateway(Arc::new(typed(value, text, origin, line, &what)?))
        }
        (GATEWAY_V1, "HTTPRoute") => {
            Object::HttpRoute(Arc::new(typed(value, text, origin, line, &what)?))
        }
        (GATEWAY_V1, "GRPCRoute") => {
            Object::GrpcRoute(Arc::new(typed(value, text, origin, line, &what)?))
        }
        // ReferenceGrant: v1beta1 is still the storage version; v1 is served since 1.5.
        (GATEWAY_V1 | GATEWAY_V1BETA1, "ReferenceGrant") => {
            Object::ReferenceGrant(Arc::new(typed(value, text, origin, line, &what)?))
        }
        ("v1", "List") => {
            let items = match value.get("items") {
                Some(serde_yaml::Value::Sequence(items)) => items.clone(),
                None | Some(serde_yaml::Value::Null) => vec![],
                Some(_) => return Err(at("List items must be a sequence".into())),
            };
            for item in items {
                parse_value(item, None, origin, line, parsed)?;
            }
            return Ok(());
        }
        (
            _,
            "Ingress" | "IngressClass" | "Service" | "EndpointSlice" | "Secret" | "GatewayClass"
            | "Gateway" | "HTTPRoute" | "GRPCRoute" | "ReferenceGrant",
        ) => {
            let msg = format!(
                "{origin}:{line}: {kind} {name}: apiVersion {api_version} is not supported, document skipped"
            );
            warn!("{msg}");
            parsed.warnings.push(msg);
            return Ok(());
        }
        _ => {
            debug!(
                origin,
                line, kind, name, "ignoring object of a kind the gateway does not use"
            );
            return Ok(());
        }
    };
    parsed.objects.push(obj);
    Ok(())
}

/// Split a multi-document YAML text at `---` lines; yields (first line number, text).
pub(crate) fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let l = line.trim_end();
        let is_marker = l == "---" || l.starts_with("--- ") || l == "..." || l.starts_with("---\t");
        if is_marker {
            docs.push((start_line, &text[start_byte..offset]));
            start_byte = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte..]));
    docs.retain(|(_, d)| {
        d.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
}

#[derive(Debug)]
struct FileState {
    fingerprint: Fingerprint,
    /// The last good objects of this file.
    objects: Vec<Object>,
    /// The current parse error, while the file is broken.
    error: Option<String>,
}

/// The manifests directory and the last good objects of each of its files.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// File reads rejected so far.
    pub rejected: u64,
}

impl ManifestDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            rejected: 0,
        }
    }

    /// Look at the directory and re-read changed files. Returns whether any file was added,
    /// removed or changed. A missing or unreadable directory is an error (and changes nothing).
    /// Each read that fails to parse adds one to `rejected`.
    pub fn scan(&mut self) -> Result<bool, String> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            format!(
                "cannot read manifests directory {}: {e}",
                self.dir.display()
            )
        })?;
        let mut seen = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            // fs::metadata follows symlinks (ConfigMap mounts are symlinks).
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let fp = Fingerprint {
                modified: meta.modified().ok(),
                len: meta.len(),
            };
            seen.insert(path, fp);
        }
        let mut changed = false;
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains_key(p));
        if self.files.len() != before {
            changed = true;
        }
        for (path, fp) in seen {
            if self.files.get(&path).is_some_and(|s| s.fingerprint == fp) {
                continue;
            }
            changed = true;
            let origin = path.display().to_string();
            let result = std::fs::read_to_string(&path)
                .map_err(|e| format!("{origin}: cannot read: {e}"))
                .and_then(|text| parse_manifests(&text, &origin));
            let state = self.files.entry(path).or_insert(FileState {
                fingerprint: fp.clone(),
                objects: Vec::new(),
                error: None,
            });
            state.fingerprint = fp;
            match result {
                Ok(parsed) => {
                    state.objects = parsed.objects;
                    state.error = None;
                }
                Err(e) => {
                    warn!(error = %e, "manifest file rejected; its last good objects stay in force");
                    state.error = Some(e);
                    self.rejected += 1;
                }
            }
        }
        Ok(changed)
    }

    /// The objects of all files (the last good ones of broken files). When two files define
    /// the same object, the file that sorts first wins and a warning names both.
    pub fn snapshot(&self) -> (Snapshot, Vec<String>) {
        let mut snap = Snapshot::default();
        let mut warnings = Vec::new();
        for (path, state) in &self.files {
            for obj in &state.objects {
                if !snap.insert(obj.clone()) {
                    warnings.push(format!(
                        "{}: {} is defined again, the first definition is kept",
                        path.display(),
                        obj.describe()
                    ));
                }
            }
        }
        (snap, warnings)
    }

    /// Current errors of broken files.
    pub fn errors(&self) -> Vec<String> {
        self.files
            .values()
            .filter_map(|s| s.error.clone())
            .collect()
    }
}

/// Poll the directory forever and send a new snapshot whenever its objects change.
/// The first snapshot is sent after the first full read, even when it is empty.
pub async fn run(
    dir: PathBuf,
    poll: Duration,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    metrics: Arc<Metrics>,
) {
    let mut source = ManifestDir::new(&dir);
    let mut first = true;
    let mut last_dir_error: Option<String> = None;
    let mut counted_rejections = 0;
    loop {
        match source.scan() {
            Ok(changed) => {
                if last_dir_error.take().is_some() {
                    info!(dir = %dir.display(), "manifests directory readable again");
                }
                if changed || first {
                    let (snap, warnings) = source.snapshot();
                    for w in &warnings {
                        warn!("{w}");
                    }
                    let errors = source.errors();
                    metrics.manifest_files_invalid.set(errors.len() as i64);
                    metrics
                        .manifest_errors
                        .inc_by(source.rejected - counted_rejections);
                    counted_rejections = source.rejected;
                    let snap = Arc::new(snap);
                    let differs = tx.borrow().as_deref() != Some(&*snap);
                    if first || differs {
                        tx.send_replace(Some(snap));
                    }
                    first = false;
                }
            }
            Err(e) => {
                // Keep serving the last good objects; say so once per distinct error.
                if last_dir_error.as_deref() != Some(&e) {
                    warn!(error = %e, "manifests directory unavailable; last good objects stay in force");
                    metrics.manifest_errors.inc();
                    last_dir_error = Some(e);
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Read a directory once (for `pingress -t`): the snapshot and every error or warning.
pub fn read_once(dir: &Path) -> Result<(Snapshot, Vec<String>), String> {
    let mut source = ManifestDir::new(dir);
    source.scan()?;
    let (snap, mut warnings) = source.snapshot();
    let errors = source.errors();
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    warnings.extend(errors);
    Ok((snap, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - name: http\n    port: 80\n";

    #[test]
    fn multi_document_file_yields_each_object() {
        let text = format!(
            "# leading comment\n{SVC}---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: pingress\nspec:\n  controller: x\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ignored\n"
        );
        let p = parse_manifests(&text, "f.yaml").unwrap();
        assert_eq!(p.objects.len(), 2);
        assert!(matches!(p.objects[0], Object::Service(_)));
        assert!(matches!(p.objects[1], Object::IngressClass(_)));
    }

    #[test]
    fn syntax_error_names_file_and_absolute_line() {
        let text = format!("{SVC}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [broken\n");
        let e = parse_manifests(&text, "dir/f.yaml").unwrap_err();
        assert!(e.starts_with("dir/f.yaml:"), "{e}");
        let line: usize = e.split(':').nth(1).unwrap().parse().unwrap();
        assert!(
            line >= 14,
            "error should point into the second document: {e}"
        );
    }

    #[test]
    fn type_error_names_object_and_line() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: 80\n";
        let e = parse_manifests(text, "f.yaml").unwrap_err();
        assert!(e.contains("Service web"), "{e}");
        assert!(e.contains("f.yaml:6"), "{e}");
    }

    #[test]
    fn missing_kind_or_name_is_an_error() {
        assert!(
            parse_manifests("apiVersion: v1\nmetadata: {name: x}\n", "f")
                .unwrap_err()
                .contains("no apiVersion or kind")
        );
        assert!(
            parse_manifests("apiVersion: v1\nkind: Service\nspec: {}\n", "f")
                .unwrap_err()
                .contains("no metadata.name")
        );
    }

    #[test]
    fn tls_and_opaque_secrets_are_kept_other_secrets_and_kinds_skipped() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ntype: Opaque\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b}\ntype: kubernetes.io/tls\ndata: {}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: t}\ntype: kubernetes.io/service-account-token\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
        let p = parse_manifests(text, "f").unwrap();
        let names: Vec<_> = p
            .objects
            .iter()
            .map(|o| match o {
                Object::Secret(s) => s.metadata.name.clone().unwrap_or_default(),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn unsupported_api_version_is_a_warning_not_an_error() {
        let text = "apiVersion: v2\nkind: Service\nmetadata: {name: odd}\nspec: {}\n";
        let p = parse_manifests(text, "f").unwrap();
        assert!(p.objects.is_empty());
        assert!(p.warnings[0].contains("apiVersion v2 is not supported"));
    }

    #[test]
    fn legacy_ingress_is_converted_with_a_deprecation_warning() {
        let text = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\nspec:\n  backend: {serviceName: s, servicePort: 80}\n";
        let p = parse_manifests(text, "f").unwrap();
        assert_eq!(p.objects.len(), 1);
        assert!(p.warnings[0].contains("deprecated"), "{:?}", p.warnings);
        let bad = "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\nspec:\n  backend: {servicePort: 80}\n";
        assert!(parse_manifests(bad, "f")
            .unwrap_err()
            .contains("serviceName"));
    }

    #[test]
    fn list_items_are_read() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b}\n";
        assert_eq!(parse_manifests(text, "f").unwrap().objects.len(), 2);
    }

    #[test]
    fn broken_file_keeps_its_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("svc.yaml");
        std::fs::write(&f, SVC).unwrap();
        std::fs::write(dir.path().join("other.yml"), SVC.replace("web", "api")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml {").unwrap();
        let mut m = ManifestDir::new(dir.path());
        assert!(m.scan().unwrap());
        assert_eq!(m.snapshot().0.services.len(), 2);
        std::fs::write(&f, "apiVersion: v1\nkind: Service\nmetadata:\n  name: [\n").unwrap();
        assert!(m.scan().unwrap());
        let (snap, _) = m.snapshot();
        assert_eq!(snap.services.len(), 2, "last good objects stay");
        assert_eq!(m.errors().len(), 1);
        assert_eq!(m.rejected, 1);
        assert!(m.errors()[0].contains("svc.yaml"));
        std::fs::remove_file(&f).unwrap();
        assert!(m.scan().unwrap());
        assert_eq!(m.snapshot().0.services.len(), 1);
        assert!(m.errors().is_empty());
        assert!(!m.scan().unwrap(), "nothing changed");
    }

    #[test]
    fn duplicate_objects_keep_the_first_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), SVC).unwrap();
        std::fs::write(dir.path().join("b.yaml"), SVC).unwrap();
        let mut m = ManifestDir::new(dir.path());
        m.scan().unwrap();
        let (snap, warnings) = m.snapshot();
        assert_eq!(snap.services.len(), 1);
        assert!(warnings[0].contains("b.yaml") && warnings[0].contains("Service shop/web"));
    }
}
