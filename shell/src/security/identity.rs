//! Who is calling: the [`Identity`] of a request's caller, from the verified client certificate
//! of its mTLS connection (parsed once per connection, [`ConnIdentity`]) or, on an embedding
//! program's plaintext connections, as that program vouches for it ([`VouchedIdentity`]).

use std::sync::Arc;

use x509_parser::prelude::{FromDer, X509Certificate};

/// Who is calling, from the verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Subject common name: `root`, `nobody`, a node name, ...
    pub name: String,
    /// The certificate is also valid for server authentication: a node certificate (as
    /// `mokvd certs` makes them). Client certificates carry client auth only. Only nodes may
    /// call the peer service.
    pub is_node: bool,
}

/// The identity of a request's caller; `None` without a verified certificate (or, on the
/// plaintext connections of an embedding program, without its vouching: [`VouchedIdentity`]).
pub fn identity_of<T>(req: &tonic::Request<T>) -> Option<Identity> {
    if let Some(conn) = req.extensions().get::<ConnIdentity>() {
        return conn.0.as_deref().cloned();
    }
    let Some(certs) = req.peer_certs() else {
        return vouched_identity(req);
    };
    identity_from_der(certs.first()?.as_ref())
}

/// The identity of an mTLS connection's client, parsed once after the handshake; tonic hands
/// a copy to every request of the connection (`Connected::ConnectInfo`). Request extensions
/// cannot be set from the wire.
#[derive(Debug, Clone)]
pub struct ConnIdentity(pub Option<Arc<Identity>>);

/// Parses the subject CN and extended key usage of a DER certificate.
pub fn identity_from_der(der: &[u8]) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    let is_node = match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.server_auth || eku.value.any,
        _ => false,
    };
    Some(Identity { name, is_node })
}

/// The caller of a plaintext connection as the program that accepted it vouches for it: the
/// `tonic::transport::server::Connected::ConnectInfo` of the embedding program's connection
/// type, which tonic puts into every request's extensions. `mokvd`'s TLS connections never carry
/// it, and request extensions cannot be set from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VouchedIdentity(pub Identity);

/// The vouched-for identity of a request's caller, if its connection carries one.
fn vouched_identity<T>(req: &tonic::Request<T>) -> Option<Identity> {
    req.extensions().get::<VouchedIdentity>().map(|v| v.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_vouched_connection_names_a_plaintext_caller() {
        let bare = tonic::Request::new(());
        assert_eq!(identity_of(&bare), None);
        let mut vouched = tonic::Request::new(());
        let root = Identity { name: "root".into(), is_node: false };
        vouched.extensions_mut().insert(VouchedIdentity(root.clone()));
        assert_eq!(identity_of(&vouched), Some(root));
    }
}
