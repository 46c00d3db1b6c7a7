//! SigV4 signatures for Bedrock requests, by AWS's own signer
//! (`aws-sigv4`). This module only feeds it the request exactly as it will
//! go on the wire: the method, the `Host` value, the encoded path, the
//! headers set by [`super::request::prepare`] and the body bytes. A header
//! sent but not given here is simply unsigned; one signed but sent with
//! another value (or twice) fails the signature, hence
//! [`super::request::forwards_client_header`].

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign as aws_sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http::{HeaderName, HeaderValue};
use std::time::SystemTime;

/// One request to sign, as it will be sent.
pub struct Signable<'a> {
    pub method: &'a str,
    /// The `Host` header value (with the port when it is not the default).
    pub host: &'a str,
    /// The request target's path, percent-encoded as sent; no query.
    pub path: &'a str,
    /// Further headers sent with exactly these values, to be signed.
    pub headers: &'a [(HeaderName, HeaderValue)],
    pub body: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A header value that is not visible ASCII, or a path that is not a
    /// URI path: nothing a caller of [`super::request::prepare`] produces.
    #[error("request cannot be signed: {0}")]
    Request(String),
}

/// The headers that sign `req` with `creds` for `service` in `region` at
/// `time`: `x-amz-date`, `authorization`, and `x-amz-security-token` when
/// the credentials are temporary. The credential headers are marked
/// sensitive.
pub fn sign(
    req: &Signable<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<Vec<(HeaderName, HeaderValue)>, SignError> {
    let mut headers = Vec::with_capacity(req.headers.len() + 1);
    headers.push(("host", req.host));
    for (n, v) in req.headers {
        let v = v
            .to_str()
            .map_err(|_| SignError::Request(format!("header {n} is not ASCII")))?;
        headers.push((n.as_str(), v));
    }
    let signable = SignableRequest::new(
        req.method,
        req.path,
        headers.into_iter(),
        SignableBody::Bytes(req.body),
    )
    .map_err(|e| SignError::Request(e.to_string()))?;
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError::Request(e.to_string()))?
        .into();
    let (instructions, _signature) = aws_sign(signable, &params)
        .map_err(|e| SignError::Request(e.to_string()))?
        .into_parts();
    let (signed, _params) = instructions.into_parts();
    signed
        .into_iter()
        .map(|h| {
            let mut v = HeaderValue::from_str(h.value())
                .map_err(|_| SignError::Request(format!("signer produced a bad {}", h.name())))?;
            v.set_sensitive(h.sensitive() || h.name() == "authorization");
            Ok((HeaderName::from_static(h.name()), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! AWS's published SigV4 test vectors (aws-signing-test-suite, "v4"),
    //! fed through [`sign`] the way Bedrock requests are: they pin down
    //! that the host, path, headers, body and session token reach the
    //! signer as the suite expects.

    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    /// 2015-08-30T12:36:00Z, the suite's timestamp.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn get<'a>(h: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        h.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    fn signed(
        creds: &Credentials,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> Vec<(HeaderName, HeaderValue)> {
        let req = Signable {
            method: "POST",
            host: "example.amazonaws.com",
            path: "/",
            headers,
            body,
        };
        sign(&req, creds, "us-east-1", "service", suite_time()).unwrap()
    }

    #[test]
    fn post_vanilla() {
        let creds = Credentials::new(AKID, SECRET, None, None, "test");
        let h = signed(&creds, &[], b"");
        assert_eq!(get(&h, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            get(&h, "authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
        );
        assert_eq!(get(&h, "x-amz-security-token"), None);
        assert!(h
            .iter()
            .any(|(n, v)| n == "authorization" && v.is_sensitive()));
    }

    #[test]
    fn post_sts_header_before() {
        let creds = Credentials::new(AKID, SECRET, Some(TOKEN.into()), None, "test");
        let h = signed(&creds, &[], b"");
        assert_eq!(get(&h, "x-amz-security-token"), Some(TOKEN));
        assert!(h
            .iter()
            .any(|(n, v)| n == "x-amz-security-token" && v.is_sensitive()));
        assert_eq!(
            get(&h, "authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead")
        );
    }

    #[test]
    fn body_and_headers_are_signed() {
        // post-x-www-form-urlencoded with its content-length and body hash
        // header given as headers to sign.
        let creds = Credentials::new(AKID, SECRET, None, None, "test");
        let headers = [
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            ),
            (
                HeaderName::from_static("content-length"),
                HeaderValue::from_static("13"),
            ),
            (
                HeaderName::from_static("x-amz-content-sha256"),
                HeaderValue::from_static(
                    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
                ),
            ),
        ];
        let h = signed(&creds, &headers, b"Param1=value1");
        assert_eq!(
            get(&h, "authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b")
        );
        // A different body is a different signature.
        let other = signed(&creds, &headers, b"Param1=value2");
        assert_ne!(get(&h, "authorization"), get(&other, "authorization"));
    }

    #[test]
    fn encoded_model_ids_are_double_encoded_in_the_signature() {
        // Bedrock's paths carry `%3A` (from `v1:0`); the canonical request
        // encodes it again, which only shows in the signature. Pinned with
        // the suite's double-url-encode canonical request, recomputed.
        let creds = Credentials::new(AKID, SECRET, None, None, "test");
        let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A892717189312%3Afunction%3Amy-rusty-fun/invocations";
        let req = Signable {
            method: "POST",
            host: "lambda.us-east-2.amazonaws.com",
            path,
            headers: &[],
            body: b"",
        };
        // 2021-05-11T15:40:45Z
        let t = UNIX_EPOCH + Duration::from_secs(1_620_747_645);
        let h = sign(&req, &creds, "us-east-2", "lambda", t).unwrap();
        let creq = "POST\n/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A892717189312%253Afunction%253Amy-rusty-fun/invocations\n\nhost:lambda.us-east-2.amazonaws.com\nx-amz-date:20210511T154045Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let expected = reference_signature(
            creq,
            "20210511T154045Z",
            "20210511/us-east-2/lambda/aws4_request",
            "us-east-2",
            "lambda",
        );
        let auth = get(&h, "authorization").unwrap();
        assert!(auth.ends_with(&format!("Signature={expected}")), "{auth}");
    }

    /// The signature of a canonical request, by the signer crate's key
    /// derivation (only the canonicalisation is under test here).
    fn reference_signature(
        creq: &str,
        amz_date: &str,
        scope: &str,
        region: &str,
        service: &str,
    ) -> String {
        let hash = ring::digest::digest(&ring::digest::SHA256, creq.as_bytes());
        let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let sts = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hex}");
        let t = UNIX_EPOCH + Duration::from_secs(1_620_747_645);
        let key = v4::generate_signing_key(SECRET, t, region, service);
        v4::calculate_signature(key, sts.as_bytes())
    }
}
