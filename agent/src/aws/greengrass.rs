//! Greengrass v2 mode: the device's identity comes from the nucleus' effective configuration,
//! `{GREENGRASS_ROOT_DIRECTORY:-/greengrass/v2}/config/effectiveConfig.yaml`, and AWS credentials
//! from the nucleus' token exchange service, which the SDK's container credentials provider
//! reads (`AWS_CONTAINER_CREDENTIALS_FULL_URI` + `AWS_CONTAINER_AUTHORIZATION_TOKEN`, set by the
//! nucleus for components that depend on `aws.greengrass.TokenExchangeService`).
//!
//! The YAML is read with `serde-saphyr`: `serde_yaml` is archived and `serde_yml` is unsound
//! (RUSTSEC-2025-0068).

use std::path::{Path, PathBuf};

use crate::settings::IotSettings;

/// The nucleus' configuration, relative to the Greengrass root directory.
pub const EFFECTIVE_CONFIG: &str = "config/effectiveConfig.yaml";
/// Largest effective configuration read (it holds every deployed component's configuration).
const MAX_EFFECTIVE_CONFIG_BYTES: u64 = 64 << 20;
const NUCLEUS: &str = "aws.greengrass.Nucleus";

#[derive(Debug, thiserror::Error)]
pub enum GreengrassError {
    #[error(transparent)]
    Read(#[from] crate::input::ReadError),
    #[error("invalid Greengrass configuration {}: {message}", path.display())]
    Yaml { path: PathBuf, message: String },
    #[error("invalid Greengrass configuration {}: {key} {problem}", path.display())]
    Key {
        path: PathBuf,
        key: String,
        problem: &'static str,
    },
}

/// What the agent needs from the nucleus' configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreengrassConfig {
    pub thing_name: String,
    pub region: String,
    pub iot_cred_endpoint: String,
    pub iot_data_endpoint: String,
    pub iot_role_alias: String,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub root_ca: PathBuf,
}

impl GreengrassConfig {
    /// Reads `{root}/config/effectiveConfig.yaml`.
    pub fn load(root: &Path) -> Result<Self, GreengrassError> {
        let path = root.join(EFFECTIVE_CONFIG);
        let text = crate::input::read_regular_text(
            &path,
            MAX_EFFECTIVE_CONFIG_BYTES,
            "the Greengrass configuration",
        )?;
        Self::parse(&text, &path)
    }

    /// Parses the effective configuration; `path` is for the errors, which name the key.
    pub fn parse(text: &str, path: &Path) -> Result<Self, GreengrassError> {
        let doc: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| GreengrassError::Yaml {
                path: path.to_owned(),
                message: e.to_string().lines().next().unwrap_or("").to_owned(),
            })?;
        let get = |keys: &[&str]| -> Result<String, GreengrassError> {
            let key = || keys.join(".");
            let mut at = &doc;
            for k in keys {
                at = at.get(k).ok_or_else(|| GreengrassError::Key {
                    path: path.to_owned(),
                    key: key(),
                    problem: "is missing",
                })?;
            }
            match at.as_str().map(str::trim) {
                Some(s) if !s.is_empty() => Ok(s.to_owned()),
                _ => Err(GreengrassError::Key {
                    path: path.to_owned(),
                    key: key(),
                    problem: "must be a non-empty string",
                }),
            }
        };
        let nucleus = |k| get(&["services", NUCLEUS, "configuration", k]);
        let file = |k: &str| -> Result<PathBuf, GreengrassError> {
            let v = get(&["system", k])?;
            if v.starts_with("pkcs11:") {
                return Err(GreengrassError::Key {
                    path: path.to_owned(),
                    key: format!("system.{k}"),
                    problem: "is a PKCS#11 (HSM) URI, which this agent does not support",
                });
            }
            Ok(PathBuf::from(v.strip_prefix("file://").unwrap_or(&v)))
        };
        Ok(GreengrassConfig {
            thing_name: get(&["system", "thingName"])?,
            region: nucleus("awsRegion")?,
            iot_cred_endpoint: nucleus("iotCredEndpoint")?,
            iot_data_endpoint: nucleus("iotDataEndpoint")?,
            iot_role_alias: nucleus("iotRoleAlias")?,
            certificate: file("certificateFilePath")?,
            private_key: file("privateKeyPath")?,
            root_ca: file("rootCaPath")?,
        })
    }

    /// The same identity as IoT mode's settings (for the MQTT connection and the IoT credentials
    /// provider, should the token exchange service be absent).
    pub fn iot_settings(&self) -> IotSettings {
        IotSettings {
            ca_cert: self.root_ca.clone(),
            cert: self.certificate.clone(),
            private_key: self.private_key.clone(),
            credential_endpoint: self.iot_cred_endpoint.clone(),
            data_ats_endpoint: self.iot_data_endpoint.clone(),
            role_alias: self.iot_role_alias.clone(),
            thing_name: self.thing_name.clone(),
        }
    }
}

/// The SDK configuration in Greengrass mode: the region from `AWS_REGION`, else the nucleus';
/// credentials from the SDK's default chain, in which the container provider reads the token
/// exchange service's variables.
pub async fn sdk_config(config: &GreengrassConfig) -> aws_config::SdkConfig {
    let region = aws_config::meta::region::RegionProviderChain::default_provider()
        .or_else(aws_config::Region::new(config.region.clone()));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str =
        include_str!("../../tests/fixtures/greengrass/config/effectiveConfig.yaml");

    fn parse(text: &str) -> Result<GreengrassConfig, GreengrassError> {
        GreengrassConfig::parse(text, Path::new("/gg/config/effectiveConfig.yaml"))
    }

    #[test]
    fn realistic_effective_config() {
        let c = parse(FIXTURE).unwrap();
        assert_eq!(
            c,
            GreengrassConfig {
                thing_name: "GreengrassCamera01".into(),
                region: "us-west-2".into(),
                iot_cred_endpoint: "c1a2b3c4d5e6f7.credentials.iot.us-west-2.amazonaws.com".into(),
                iot_data_endpoint: "a1b2c3d4e5f6g7-ats.iot.us-west-2.amazonaws.com".into(),
                iot_role_alias: "GreengrassV2TokenExchangeRoleAlias".into(),
                certificate: "/greengrass/v2/thingCert.crt".into(),
                private_key: "/greengrass/v2/privKey.key".into(),
                root_ca: "/greengrass/v2/rootCA.pem".into(),
            }
        );
        let iot = c.iot_settings();
        assert_eq!(iot.thing_name, "GreengrassCamera01");
        assert_eq!(iot.cert, PathBuf::from("/greengrass/v2/thingCert.crt"));
    }

    #[test]
    fn a_repeated_key_is_refused_not_last_wins() {
        let twice = FIXTURE.replace(
            "thingName: \"GreengrassCamera01\"",
            "thingName: \"GreengrassCamera01\"\n  thingName: \"Other\"",
        );
        assert_ne!(twice, FIXTURE);
        assert!(matches!(parse(&twice), Err(GreengrassError::Yaml { .. })));
    }

    #[test]
    fn load_from_a_root_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/greengrass");
        assert_eq!(GreengrassConfig::load(&root).unwrap().region, "us-west-2");
        let e = GreengrassConfig::load(Path::new("/nonexistent-gg")).unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent-gg/config/effectiveConfig.yaml"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                FIXTURE.replace("      awsRegion: \"us-west-2\"\n", ""),
                "services.aws.greengrass.Nucleus.configuration.awsRegion is missing",
            ),
            (
                FIXTURE.replace("thingName: \"GreengrassCamera01\"", "thingName: \"\""),
                "system.thingName must be a non-empty string",
            ),
            (
                FIXTURE.replace(
                    "iotRoleAlias: \"GreengrassV2TokenExchangeRoleAlias\"",
                    "iotRoleAlias: [a, b]",
                ),
                "services.aws.greengrass.Nucleus.configuration.iotRoleAlias must be a non-empty string",
            ),
            (
                FIXTURE.replace(
                    "\"/greengrass/v2/privKey.key\"",
                    "\"pkcs11:object=key;type=private\"",
                ),
                "system.privateKeyPath is a PKCS#11",
            ),
            ("system: {}\n".into(), "system.thingName is missing"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} (want {want})");
            assert!(e.contains("/gg/config/effectiveConfig.yaml"), "{e}");
        }
        let e = parse("services: [\n").unwrap_err().to_string();
        assert!(e.contains("invalid Greengrass configuration"), "{e}");
    }

    #[test]
    fn file_urls_are_paths() {
        let c = parse(&FIXTURE.replace(
            "\"/greengrass/v2/rootCA.pem\"",
            "\"file:///greengrass/v2/rootCA.pem\"",
        ))
        .unwrap();
        assert_eq!(c.root_ca, PathBuf::from("/greengrass/v2/rootCA.pem"));
    }
}
