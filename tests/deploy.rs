//! The deploy/ manifests and the Dockerfile stay consistent with the real build and config.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn docs(file: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

fn deployment() -> serde_yaml::Value {
    docs("deploy/base/deployment.yaml").remove(0)
}

#[test]
fn configmap_carries_the_shipped_config_verbatim() {
    let cm = docs("deploy/base/configmap.yaml").remove(0);
    let data = cm["data"]["pingress.yaml"].as_str().unwrap();
    let conf = std::fs::read_to_string(root().join("conf/pingress.yaml")).unwrap();
    assert_eq!(
        data, conf,
        "regenerate deploy/base/configmap.yaml from conf/pingress.yaml"
    );
    pingress::config::Config::from_yaml(data, "configmap").unwrap();
}

#[test]
fn every_manifest_parses_and_names_its_kind() {
    let kustomization = docs("deploy/base/kustomization.yaml").remove(0);
    for r in kustomization["resources"].as_sequence().unwrap() {
        let file = format!("deploy/base/{}", r.as_str().unwrap());
        for d in docs(&file) {
            assert!(d["apiVersion"].is_string(), "{file}: no apiVersion");
            assert!(d["kind"].is_string(), "{file}: no kind");
            assert!(d["metadata"]["name"].is_string(), "{file}: no name");
        }
    }
}

#[test]
fn deployment_matches_the_config_and_the_image() {
    let d = deployment();
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["-c", "/etc/pingress/pingress.yaml"]);
    let conf = pingress::config::Config::load(&root().join("conf/pingress.yaml")).unwrap();
    // The pid file and upgrade socket live on the writable emptyDir.
    let run_mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "run")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(conf.server.pid_file.starts_with(&run_mount));
    assert!(conf.server.upgrade_sock.starts_with(&run_mount));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    // Termination grace covers the config's grace period and shutdown timeout.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let needed = conf.server.grace_period_seconds.unwrap_or(0)
        + conf.server.graceful_shutdown_timeout_seconds.unwrap_or(0);
    assert!(
        grace > needed,
        "terminationGracePeriodSeconds {grace} <= {needed}"
    );
    // Probes use the admin port the config listens on.
    let admin_port = conf.pingress.admin_listen.rsplit(':').next().unwrap();
    let ports = c["ports"].as_sequence().unwrap();
    let admin = ports.iter().find(|p| p["name"] == "admin").unwrap();
    assert_eq!(
        admin["containerPort"].as_u64().unwrap().to_string(),
        admin_port
    );
    assert_eq!(pod["hostNetwork"], true);
    // The HOST_IP variable the status config reads is set from the downward API.
    let env_name = conf.pingress.status.address_from_env.unwrap();
    assert!(c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|e| e["name"] == env_name.as_str()
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"));
}

#[test]
fn dockerfile_makes_the_dist_build_and_ships_what_the_deployment_runs() {
    let df = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    // The shipped build: the `dist` profile, which the load harness measures too.
    assert!(
        df.contains("cargo build --profile dist --locked --bin pingress"),
        "the dist build"
    );
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("\n[profile.dist]\n"));
    let harness = std::fs::read_to_string(root().join("benches/load/run")).unwrap();
    assert!(harness.contains("cargo build --profile dist --locked --bin pingress"));
    // Every target Cargo.toml declares must be in the build context, or cargo cannot read it:
    // src/ and the benches' single files.
    assert!(df.contains("COPY src ./src") && df.contains("COPY benches/*.rs ./benches/"));
    let mut benches = 0;
    for line in manifest.lines().skip_while(|l| *l != "[[bench]]") {
        if let Some(name) = line.strip_prefix("name = ") {
            let file = format!("benches/{}.rs", name.trim_matches('"'));
            assert!(
                root().join(&file).is_file(),
                "{file} (declared in Cargo.toml)"
            );
            benches += 1;
        }
    }
    assert!(benches >= 2);
    assert!(df.contains("cmake"));
    assert!(df.contains("target/dist/pingress /usr/local/bin/pingress"));
    assert!(df.contains("cap_net_bind_service=+ep"));
    assert!(df.contains("USER 10001"));
    assert!(df.contains("/etc/pingress/pingress.yaml"));
    let d = deployment();
    assert_eq!(
        d["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
            .as_u64()
            .unwrap(),
        10001
    );
}

#[test]
fn daemonset_overlay_runs_the_same_pod_as_the_deployment() {
    let d = deployment();
    let ds = docs("deploy/overlays/daemonset/daemonset.yaml").remove(0);
    let mut want = d["spec"]["template"].clone();
    want["spec"].as_mapping_mut().unwrap().remove("affinity");
    assert_eq!(ds["spec"]["template"], want, "regenerate daemonset.yaml");
    assert_eq!(ds["kind"], "DaemonSet");
}

#[test]
fn namespaced_overlay_config_differs_only_in_the_watched_namespaces() {
    let cm = docs("deploy/overlays/namespaced/config.yaml").remove(0);
    let text = cm["data"]["pingress.yaml"].as_str().unwrap();
    let conf = pingress::config::Config::from_yaml(text, "namespaced").unwrap();
    assert_eq!(conf.pingress.source.namespaces, ["apps"]);
    let base = pingress::config::Config::load(&root().join("conf/pingress.yaml")).unwrap();
    let mut p = conf.pingress.clone();
    p.source.namespaces.clear();
    assert_eq!(p, base.pingress);
    // Word for word, so Pingora keys and comments cannot drift either.
    let base_text = std::fs::read_to_string(root().join("conf/pingress.yaml")).unwrap();
    let expected = base_text.replace(
        "    # namespaces: [team-a, team-b]   # default: all namespaces\n",
        "    namespaces: [apps]\n",
    );
    assert_eq!(
        text, expected,
        "regenerate deploy/overlays/namespaced/config.yaml from conf/pingress.yaml"
    );
    // Every watched namespace has its Role and RoleBinding.
    let roles = docs("deploy/overlays/namespaced/roles.yaml");
    for ns in &conf.pingress.source.namespaces {
        for kind in ["Role", "RoleBinding"] {
            assert!(
                roles
                    .iter()
                    .any(|r| r["kind"] == kind && r["metadata"]["namespace"] == ns.as_str()),
                "{kind} for {ns}"
            );
        }
    }
}

/// `kubectl kustomize DIR` (kubectl v1.32 with kustomize v5.5 is on the project's machines;
/// `.ci/setup` says so when it is missing): the rendered objects.
fn render(dir: &str) -> Vec<serde_yaml::Value> {
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("kubectl kustomize {dir}: {e} (is kubectl installed?)"));
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

/// `Kind namespace/name` of every rendered object, sorted.
fn names(objs: &[serde_yaml::Value]) -> Vec<String> {
    let mut v: Vec<String> = objs
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    v.sort();
    v
}

fn find<'a>(
    objs: &'a [serde_yaml::Value],
    kind: &str,
    name: &str,
) -> Option<&'a serde_yaml::Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

#[test]
fn every_kustomization_renders_and_each_overlay_changes_what_it_says() {
    let base = render("deploy");
    assert_eq!(
        names(&base),
        names(&render("deploy/base")),
        "deploy/ is the base"
    );
    assert_eq!(render("deploy/examples").len(), 7);
    let base_names = names(&base);
    let deployment = find(&base, "Deployment", "pingress").expect("the base Deployment");
    assert_eq!(deployment["spec"]["template"]["spec"]["hostNetwork"], true);

    // nodeport: pod network, and a NodePort Service on 30080/30443 keeping client addresses.
    let np = render("deploy/overlays/nodeport");
    let d = find(&np, "Deployment", "pingress").unwrap();
    assert_eq!(d["spec"]["template"]["spec"]["hostNetwork"], false);
    let svc = find(&np, "Service", "pingress").expect("the NodePort Service");
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["externalTrafficPolicy"], "Local");
    let node_ports: Vec<u64> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["nodePort"].as_u64().unwrap())
        .collect();
    assert_eq!(node_ports, [30080, 30443]);
    assert_eq!(np.len(), base.len() + 1);

    // daemonset: a DaemonSet instead of the Deployment, nothing else.
    let ds = render("deploy/overlays/daemonset");
    assert!(find(&ds, "Deployment", "pingress").is_none());
    assert_eq!(
        find(&ds, "DaemonSet", "pingress").unwrap()["spec"]["template"]["spec"]["hostNetwork"],
        true
    );
    let mut want = base_names.clone();
    want.retain(|n| n != "Deployment pingress/pingress");
    want.push("DaemonSet pingress/pingress".into());
    want.sort();
    assert_eq!(names(&ds), want);

    // default-class: the IngressClass is the cluster default.
    let dc = render("deploy/overlays/default-class");
    let class = find(&dc, "IngressClass", "pingress").unwrap();
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert!(
        find(&base, "IngressClass", "pingress").unwrap()["metadata"]["annotations"]
            ["ingressclass.kubernetes.io/is-default-class"]
            .is_null()
    );
    assert_eq!(names(&dc), base_names);

    // namespaced: the ClusterRole reads only IngressClasses; Roles in `apps`; config watches apps.
    let ns = render("deploy/overlays/namespaced");
    let rules = find(&ns, "ClusterRole", "pingress").unwrap()["rules"]
        .as_sequence()
        .unwrap()
        .clone();
    // Only cluster-scoped kinds: IngressClasses, GatewayClasses (and their status), Namespaces.
    let resources: Vec<&str> = rules
        .iter()
        .flat_map(|r| r["resources"].as_sequence().unwrap().iter())
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        resources,
        [
            "ingressclasses",
            "gatewayclasses",
            "gatewayclasses/status",
            "namespaces"
        ]
    );
    assert!(ns
        .iter()
        .any(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == "apps"));
    assert!(ns
        .iter()
        .any(|o| o["kind"] == "RoleBinding" && o["metadata"]["namespace"] == "apps"));
    let cm = find(&ns, "ConfigMap", "pingress-config")
        .or_else(|| ns.iter().find(|o| o["kind"] == "ConfigMap"))
        .unwrap();
    let text = cm["data"]["pingress.yaml"].as_str().unwrap();
    let conf = pingress::config::Config::from_yaml(text, "namespaced").unwrap();
    assert_eq!(conf.pingress.source.namespaces, ["apps"]);
}
