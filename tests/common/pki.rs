//! A throwaway CA and leaf certificates for TLS tests, written as PEM files.

#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use std::path::{Path, PathBuf};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    pub file: PathBuf,
}

/// A leaf written to `cert`/`key`.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

/// How a leaf should be wrong, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Good,
    Expired,
}

impl Ca {
    /// A new CA; its certificate is written to `dir/NAME.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("agentwire test CA {name}"));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = p.self_signed(&key).expect("ca cert");
        let pem = cert.pem();
        let file = dir.join(format!("{name}.pem"));
        std::fs::write(&file, &pem).expect("write ca");
        Self {
            issuer: Issuer::new(p, key),
            pem,
            file,
        }
    }

    /// A server certificate for `names` (DNS names or IP literals), written to
    /// `dir/FILE.crt` (leaf then CA: a chain) and `dir/FILE.key`.
    pub fn leaf(&self, dir: &Path, file: &str, names: &[&str], validity: Validity) -> Leaf {
        let mut p =
            CertificateParams::new(names.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        p.distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if validity == Validity::Expired {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("leaf cert");
        let cert_path = dir.join(format!("{file}.crt"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), self.pem)).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().to_vec(),
        }
    }
}
