use std::net::IpAddr;

use polytomic_webhook_core::__define_rejection;

__define_rejection! {
    /// Why the source-IP allowlist refused a request: always `403`, code `source_ip_not_allowed`.
    ///
    /// ```
    /// use polytomic_webhook_auth::allowlist::SourceIpRejection;
    ///
    /// let rejection = SourceIpRejection::NotAllowed { ip: "203.0.113.9".parse().unwrap() };
    /// assert_eq!(rejection.status(), 403);
    /// assert_eq!(rejection.code(), "source_ip_not_allowed");
    /// assert_eq!(rejection.body_text(), "the source address 203.0.113.9 is not allowed");
    /// ```
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum SourceIpRejection {
        /// The server did not record the connection's peer address, so nothing can be allowed.
        #[rejection(FORBIDDEN, "source_ip_not_allowed")]
        NoPeerAddress => "the source address of the request is unknown";
        /// The client address is outside every allowed block.
        #[rejection(FORBIDDEN, "source_ip_not_allowed")]
        NotAllowed {
            /// The refused address.
            ip: IpAddr,
        } => "the source address {ip} is not allowed";
        /// The peer is a trusted proxy, but the forwarding headers do not say who the client is
        /// (an `unknown` or obfuscated entry where the walk needs it, a header malformed
        /// anywhere, or more trusted hops than are read).
        #[rejection(FORBIDDEN, "source_ip_not_allowed")]
        UntraceableClient =>
            "the forwarding headers set by a trusted proxy do not identify the client";
    }
}
