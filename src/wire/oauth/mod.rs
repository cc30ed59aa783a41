//! OAuth 2.1 formats: `application/x-www-form-urlencoded` bodies and query strings,
//! URIs (redirect URIs, client ID URLs, resource indicators), HTTP Basic client
//! credentials, `Cookie` headers, and the client metadata JSON shared by dynamic
//! registration (RFC 7591) and client ID metadata documents.
//!
//! Only syntax lives here: which URIs may be registered, which clients may do what and
//! every other rule is in `proto::oauth`. No parser panics on any input; each has a fuzz
//! target (`fuzz/fuzz_targets/oauth_*.rs`).

pub mod form;
pub mod header;
pub mod metadata;
pub mod uri;
