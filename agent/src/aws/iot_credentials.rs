//! AWS credentials from the AWS IoT credentials provider, for IoT mode: the device's X.509
//! certificate (mutual TLS) is exchanged for temporary credentials of the IAM role behind a role
//! alias. No Rust crate does this, so this is the `ProvideCredentials` the SDK clients and the
//! uploader use:
//!
//! `GET https://{AWS_IOT_CORE_CREDENTIAL_ENDPOINT}/role-aliases/{AWS_IOT_CORE_ROLE_ALIAS}/credentials`
//! with `x-amzn-iot-thingname`, answered with
//! `{"credentials":{"accessKeyId","secretAccessKey","sessionToken","expiration"}}`.
//!
//! The answer is cached until [`REFRESH_BEFORE`] its expiry (the SDK's identity cache and the
//! uploader's signer cache on top of it too), so the endpoint is asked about once an hour.
//! Errors never quote the answer's body when it may hold credentials.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};

use crate::settings::IotSettings;

/// Credentials are fetched again this long before they expire.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(300);
const PROVIDER_NAME: &str = "AwsIotCredentialsProvider";

#[derive(Debug, thiserror::Error)]
pub enum IotCredentialsError {
    #[error(transparent)]
    File(#[from] crate::input::ReadError),
    #[error("invalid {what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error(
        "cannot get credentials from the AWS IoT credentials endpoint {endpoint}: {message} \
         (check AWS_IOT_CORE_CREDENTIAL_ENDPOINT, that the device certificate and key are the \
         registered, active ones and AWS_IOT_CA_CERT)"
    )]
    Transport { endpoint: String, message: String },
    #[error(
        "the AWS IoT credentials endpoint {endpoint} refused role alias {role_alias} for thing \
         {thing}: HTTP {status} {message}"
    )]
    Refused {
        endpoint: String,
        role_alias: String,
        thing: String,
        status: u16,
        message: String,
    },
    #[error(
        "the AWS IoT credentials endpoint {endpoint} answered with an unexpected body ({problem})"
    )]
    Malformed { endpoint: String, problem: String },
}

#[derive(Debug)]
pub struct IotCredentialsProvider {
    endpoint: String,
    url: String,
    role_alias: String,
    thing_name: String,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    credentials: AnswerCredentials,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// Largest certificate, key or CA file read (a PEM chain is a few kilobytes).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, IotCredentialsError> {
    Ok(crate::input::read_regular_file(path, MAX_PEM_BYTES, what)?)
}

impl IotCredentialsProvider {
    /// Reads the certificate, key and CA files now, so a wrong path fails at start.
    pub fn new(iot: &IotSettings) -> Result<Self, IotCredentialsError> {
        let pem_error = |what: &'static str, path: &std::path::Path, e: reqwest::Error| {
            IotCredentialsError::Pem {
                what,
                path: path.display().to_string(),
                message: super::error_chain(&e),
            }
        };
        let mut identity = read("the device certificate (AWS_IOT_CORE_CERT)", &iot.cert)?;
        identity.push(b'\n');
        identity.extend(read(
            "the private key (AWS_IOT_CORE_PRIVATE_KEY)",
            &iot.private_key,
        )?);
        let identity = reqwest::Identity::from_pem(&identity).map_err(|e| {
            pem_error(
                "device certificate or key (AWS_IOT_CORE_CERT, AWS_IOT_CORE_PRIVATE_KEY)",
                &iot.cert,
                e,
            )
        })?;
        let ca_pem = read("the CA certificate (AWS_IOT_CA_CERT)", &iot.ca_cert)?;
        let cas = reqwest::Certificate::from_pem_bundle(&ca_pem)
            .map_err(|e| pem_error("CA certificate (AWS_IOT_CA_CERT)", &iot.ca_cert, e))?;
        if cas.is_empty() {
            return Err(IotCredentialsError::Pem {
                what: "CA certificate (AWS_IOT_CA_CERT)",
                path: iot.ca_cert.display().to_string(),
                message: "no certificate in it".into(),
            });
        }
        let http = reqwest::Client::builder()
            .identity(identity)
            .tls_certs_only(cas)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| IotCredentialsError::Transport {
                endpoint: iot.credential_endpoint.clone(),
                message: super::error_chain(&e),
            })?;
        Ok(IotCredentialsProvider {
            endpoint: iot.credential_endpoint.clone(),
            url: format!(
                "https://{}/role-aliases/{}/credentials",
                iot.credential_endpoint, iot.role_alias
            ),
            role_alias: iot.role_alias.clone(),
            thing_name: iot.thing_name.clone(),
            http,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// Cached credentials, or fresh ones when they expire within [`REFRESH_BEFORE`].
    pub async fn credentials(&self) -> Result<Credentials, IotCredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.expiry()
                .is_some_and(|at| at > SystemTime::now() + REFRESH_BEFORE)
        {
            return Ok(c.clone());
        }
        let fresh = self.fetch().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    async fn fetch(&self) -> Result<Credentials, IotCredentialsError> {
        let transport = |e: reqwest::Error| IotCredentialsError::Transport {
            endpoint: self.endpoint.clone(),
            message: super::error_chain(&e),
        };
        let response = self
            .http
            .get(&self.url)
            .header("x-amzn-iot-thingname", &self.thing_name)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            // IoT's refusals are {"message": "..."}: no credentials in them.
            let message = crate::input::json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(IotCredentialsError::Refused {
                endpoint: self.endpoint.clone(),
                role_alias: self.role_alias.clone(),
                thing: self.thing_name.clone(),
                status: status.as_u16(),
                message: message.chars().take(200).collect(),
            });
        }
        let malformed = |problem: String| IotCredentialsError::Malformed {
            endpoint: self.endpoint.clone(),
            problem,
        };
        // serde_json's messages give positions and field names, never the values.
        let answer: Answer =
            crate::input::json::from_slice(&body).map_err(|e| malformed(e.to_string()))?;
        let c = answer.credentials;
        let expiry: jiff::Timestamp = c
            .expiration
            .parse()
            .map_err(|e| malformed(format!("expiration: {e}")))?;
        let expiry = u64::try_from(expiry.as_second())
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| malformed("expiration before 1970".into()))?;
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            Some(expiry),
            PROVIDER_NAME,
        ))
    }
}

impl ProvideCredentials for IotCredentialsProvider {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}
