//! The packaging (systemd unit, Greengrass recipe, Dockerfile) checked against the agent: each
//! sets only variables the agent reads, runs the binary the way `run` expects, and keeps the
//! keys its host needs. `tests/packaging/check.sh` adds what needs outside tools
//! (`systemd-analyze verify`, hadolint).

use std::collections::{BTreeMap, BTreeSet};

use kvs_edge_agent::settings::VARIABLES;
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}"))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn known(name: &str) -> bool {
    VARIABLES.contains(&name)
}

/// Variables read from the agent's own source: the string literals that look like variable
/// names in the settings module and the logging setup.
fn variables_in_source() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["agent/src/settings/mod.rs", "agent/src/logging.rs"] {
        let text = read(file);
        for literal in text.split('"').skip(1).step_by(2) {
            let looks_like_variable = literal.contains('_')
                && literal
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            // AWS_GG_*: set by the Greengrass nucleus for every component, never by operators.
            if looks_like_variable && !literal.starts_with("AWS_GG_") {
                names.insert(literal.to_owned());
            }
        }
    }
    names
}

#[test]
fn the_variable_list_is_what_the_agent_reads() {
    let read_by_agent = variables_in_source();
    let listed: BTreeSet<String> = VARIABLES.iter().map(|v| (*v).to_owned()).collect();
    assert_eq!(
        read_by_agent, listed,
        "settings::VARIABLES lists every variable the agent reads, and no other"
    );
    // The README's table documents the same names.
    let readme = read("README.md");
    for v in VARIABLES.iter().filter(|v| **v != "RUST_LOG") {
        assert!(
            readme.contains(&format!("`{v}`")),
            "README.md documents {v}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Greengrass recipe

fn recipe() -> (String, Value) {
    let text = read("recipes/recipe.yaml");
    let doc: Value = serde_saphyr::from_str(&text).expect("recipes/recipe.yaml is YAML");
    (text, doc)
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect()
}

#[test]
fn recipe_has_the_greengrass_keys() {
    let (text, r) = recipe();
    assert!(
        !text.contains('\t'),
        "the nucleus refuses a recipe with a tab character"
    );
    assert_eq!(r["RecipeFormatVersion"], "2020-01-25");
    let name = r["ComponentName"].as_str().unwrap();
    assert_eq!(name, "aws.kinesisvideo.OpenEdgeAgent");
    assert_eq!(r["ComponentVersion"], env!("CARGO_PKG_VERSION"));
    assert!(r["ComponentDescription"].is_string());
    assert!(r["ComponentPublisher"].is_string());

    let deps = &r["ComponentDependencies"];
    for dep in [
        "aws.greengrass.SecretManager",
        "aws.greengrass.TokenExchangeService",
    ] {
        assert_eq!(deps[dep]["DependencyType"], "HARD", "{dep}");
        assert!(deps[dep]["VersionRequirement"].is_string(), "{dep}");
    }

    let access = &r["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"];
    let policies = |service: &str| -> Vec<&Value> {
        access[service]
            .as_object()
            .unwrap_or_else(|| panic!("accessControl.{service}"))
            .values()
            .collect()
    };
    let secrets = policies("aws.greengrass.SecretManager");
    assert!(
        secrets
            .iter()
            .any(|p| strings(&p["operations"]).contains(&"aws.greengrass#GetSecretValue"))
    );
    for p in &secrets {
        assert!(p["policyDescription"].is_string());
        assert!(!strings(&p["resources"]).is_empty());
    }
    // The control topics use the agent's own MQTT connection, not the nucleus' proxy: no IPC
    // access is asked for that it does not use.
    assert!(
        access.get("aws.greengrass.ipc.mqttproxy").is_none(),
        "mqttproxy access the agent does not use"
    );
}

#[test]
fn recipe_runs_the_artifact_with_known_variables() {
    let (_, r) = recipe();
    let name = r["ComponentName"].as_str().unwrap();
    let version = r["ComponentVersion"].as_str().unwrap();
    let defaults = r["ComponentConfiguration"]["DefaultConfiguration"]
        .as_object()
        .unwrap();
    let manifests = r["Manifests"].as_array().unwrap();
    assert!(!manifests.is_empty());
    let linux: Vec<&Value> = manifests
        .iter()
        .filter(|m| m["Platform"]["os"] == "linux")
        .collect();
    assert_eq!(linux.len(), manifests.len(), "Linux only");
    for m in linux {
        for a in m["Artifacts"].as_array().unwrap() {
            let uri = a["URI"].as_str().unwrap();
            assert!(
                uri.ends_with(&format!("/{name}/{version}/kvs-edge-agent")),
                "the artifact is the binary, under the artifact layout: {uri}"
            );
            assert!(a["Permission"]["Execute"].is_string(), "executable");
        }
        let lifecycle = &m["Lifecycle"];
        let script = lifecycle["Run"]["Script"]
            .as_str()
            .or(lifecycle["Run"].as_str())
            .expect("Lifecycle.Run");
        assert!(
            script.starts_with("{artifacts:path}/kvs-edge-agent run"),
            "{script}"
        );
        let setenv = lifecycle["Setenv"].as_object().expect("Lifecycle.Setenv");
        assert!(!setenv.is_empty());
        let mut references = vec![script.to_owned()];
        for (var, value) in setenv {
            assert!(
                known(var),
                "the recipe sets {var}, which the agent does not read"
            );
            references.push(value.as_str().expect("a string value").to_owned());
        }
        // Every {configuration:/KEY} refers to a key of DefaultConfiguration.
        for text in references {
            for (_, rest) in text
                .match_indices("{configuration:/")
                .map(|(i, _)| text.split_at(i))
            {
                let key = &rest["{configuration:/".len()..rest.find('}').unwrap()];
                assert!(defaults.contains_key(key), "{key} has a default");
            }
        }
    }
    // Every default that looks like a variable is one the agent reads.
    for key in defaults.keys().filter(|k| k.starts_with("AWS_")) {
        assert!(known(key), "{key}");
    }
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `key -> values` of one unit file (keys repeat: Environment=, SystemCallFilter=).
fn unit(path: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in read(path).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        keys.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    keys
}

fn one<'a>(unit: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match unit.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key} once, found {other:?}"),
    }
}

/// Seconds of a systemd time span such as `15s`, `2min`, `90`.
fn seconds(span: &str) -> u64 {
    let digits: String = span.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().unwrap();
    match &span[digits.len()..] {
        "" | "s" => n,
        "min" => n * 60,
        other => panic!("unit {other}"),
    }
}

/// The names an env file sets, commented-out examples included.
fn env_file_names(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn systemd_unit_is_a_notify_service_with_a_watchdog() {
    let u = unit("systemd/kvs-edge-agent.service");
    assert_eq!(one(&u, "Type"), "notify");
    assert_eq!(one(&u, "NotifyAccess"), "main");
    assert!(seconds(one(&u, "WatchdogSec")) >= 10);
    assert_eq!(one(&u, "Restart"), "on-failure");
    assert_eq!(one(&u, "EnvironmentFile"), "-/etc/kvs-edge-agent/env");
    // The agent's shutdown is bounded at 10 s (agent/src/cli/run.rs); systemd must not kill it
    // before, nor wait much longer.
    let stop = seconds(one(&u, "TimeoutStopSec"));
    assert!((11..=30).contains(&stop), "TimeoutStopSec {stop}");
    assert_eq!(one(&u, "User"), "kvs-edge-agent");
    assert_eq!(one(&u, "ProtectSystem"), "strict");
    assert_eq!(one(&u, "CapabilityBoundingSet"), "");
    assert_eq!(
        one(&u, "RestrictAddressFamilies"),
        "AF_INET AF_INET6 AF_UNIX"
    );
    for key in [
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ] {
        assert_eq!(one(&u, key), "yes", "{key}");
    }
    assert!(u["SystemCallFilter"].contains(&"@system-service".to_owned()));

    let exec = one(&u, "ExecStart");
    assert!(
        exec.starts_with("/usr/local/bin/kvs-edge-agent run"),
        "{exec}"
    );
    let writable: Vec<&str> = one(&u, "ReadWritePaths").split_whitespace().collect();
    let mut env = BTreeMap::new();
    for e in &u["Environment"] {
        let (k, v) = e.split_once('=').unwrap();
        assert!(known(k), "the unit sets {k}, which the agent does not read");
        env.insert(k, v);
    }
    for dir_var in [
        "AWS_KVS_EDGE_RECORDING_DIRECTORY",
        "AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY",
    ] {
        let dir = env[dir_var];
        assert!(
            writable.contains(&dir),
            "{dir_var}={dir} is in ReadWritePaths"
        );
    }
    let state = format!("/var/lib/{}", one(&u, "StateDirectory"));
    let logs = format!("/var/log/{}", one(&u, "LogsDirectory"));
    assert_eq!(env["AWS_KVS_EDGE_RECORDING_DIRECTORY"], state);
    assert_eq!(env["AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY"], logs);
}

#[test]
fn systemd_env_example_names_only_known_variables() {
    let u = unit("systemd/kvs-edge-agent.service");
    let exec = one(&u, "ExecStart");
    // Variables the unit itself expands on its command line.
    let unit_vars: Vec<&str> = exec
        .split_whitespace()
        .filter_map(|w| w.strip_prefix('$'))
        .collect();
    let names = env_file_names(&read("systemd/env.example"));
    for n in &names {
        assert!(
            known(n) || unit_vars.contains(&n.as_str()),
            "env.example sets {n}, which neither the agent nor the unit reads"
        );
    }
    for v in &unit_vars {
        assert!(names.iter().any(|n| n == v), "env.example documents {v}");
    }
    // Every variable an operator would set is documented (not the ignored GStreamer ones, nor
    // GREENGRASS_ROOT_DIRECTORY, which only matters under the Greengrass nucleus).
    for v in VARIABLES.iter().filter(|v| {
        !v.starts_with("GST_") && **v != "LD_LIBRARY_PATH" && **v != "GREENGRASS_ROOT_DIRECTORY"
    }) {
        assert!(names.iter().any(|n| n == v), "env.example documents {v}");
    }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// One instruction of a Dockerfile: keyword and arguments, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (keyword, args) = pending.split_once(' ').unwrap_or((&pending, ""));
                out.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.split_whitespace().collect::<Vec<_>>().join(" "),
                });
                pending.clear();
            }
        }
    }
    out
}

/// The instructions of each stage, in order.
fn stages(all: &[Instruction]) -> Vec<&[Instruction]> {
    let starts: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .map(|(n, _)| n)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| &all[s..*starts.get(k + 1).unwrap_or(&all.len())])
        .collect()
}

fn json_list(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("exec form {args}: {e}"))
}

#[test]
fn dockerfile_builds_locked_and_runs_as_non_root() {
    let all = dockerfile();
    let stages = stages(&all);
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let (build, runtime) = (stages[0], stages[1]);

    // Builder: Rust on bookworm (the runtime's glibc), at least the workspace's rust-version.
    let from = &build[0].args;
    let (image, alias) = from.split_once(" AS ").expect("FROM image AS name");
    let tag = image.strip_prefix("rust:").expect("a rust image");
    let version = tag
        .strip_suffix("-bookworm")
        .expect("bookworm, as the runtime");
    let workspace = read("Cargo.toml");
    let needed = workspace
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        parse(version) >= parse(needed),
        "{image} builds rust-version {needed}"
    );
    let runs: Vec<&str> = build
        .iter()
        .filter(|i| i.keyword == "RUN")
        .map(|i| i.args.as_str())
        .collect();
    assert_eq!(runs, ["cargo build --release --locked"]);

    // Runtime: Debian slim with CA certificates only, the binary from the builder.
    assert_eq!(runtime[0].args, "debian:bookworm-slim");
    let installs: Vec<&str> = runtime
        .iter()
        .filter(|i| i.keyword == "RUN" && i.args.contains("apt-get install"))
        .flat_map(|i| i.args.split("&&"))
        .filter_map(|c| c.trim().strip_prefix("apt-get install"))
        .flat_map(str::split_whitespace)
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert_eq!(installs, ["ca-certificates"]);
    assert!(runtime.iter().any(|i| i.keyword == "COPY"
        && i.args
            == format!(
                "--from={alias} /src/target/release/kvs-edge-agent /usr/local/bin/kvs-edge-agent"
            )));

    let user = runtime.iter().rfind(|i| i.keyword == "USER").expect("USER");
    let uid = user.args.split(':').next().unwrap();
    assert!(uid != "root" && uid != "0", "not root: {}", user.args);

    let mut env = BTreeMap::new();
    for i in runtime.iter().filter(|i| i.keyword == "ENV") {
        for pair in i.args.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV key=value");
            assert!(
                known(k),
                "the image sets {k}, which the agent does not read"
            );
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    let volumes: Vec<String> = runtime
        .iter()
        .filter(|i| i.keyword == "VOLUME")
        .flat_map(|i| json_list(&i.args))
        .collect();
    for dir_var in [
        "AWS_KVS_EDGE_RECORDING_DIRECTORY",
        "AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY",
    ] {
        let dir = env.get(dir_var).unwrap_or_else(|| panic!("ENV {dir_var}"));
        assert!(volumes.contains(dir), "{dir_var}={dir} is a VOLUME");
    }
    let entrypoint = runtime
        .iter()
        .rfind(|i| i.keyword == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    assert_eq!(
        json_list(&entrypoint.args),
        ["/usr/local/bin/kvs-edge-agent", "run"]
    );
}

#[test]
fn dockerignore_keeps_what_the_build_copies() {
    let all = dockerfile();
    let ignore = read(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "everything out by default");
    for copy in all
        .iter()
        .filter(|i| i.keyword == "COPY" && !i.args.starts_with("--from"))
    {
        let words: Vec<&str> = copy.args.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(
                rules.iter().any(|r| r.strip_prefix('!').is_some_and(
                    |p| p == src || p.trim_end_matches('/').starts_with(&format!("{src}/"))
                )),
                "COPY {src} is let into the build context"
            );
        }
    }
}
