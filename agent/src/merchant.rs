//! Merchants are registrable domains: `www.shop.example.co.uk` and `shop.example.co.uk` are
//! one merchant. The public suffix list (the `psl` crate, compiled in) decides where the
//! registrable part starts, so `co.uk` is never mistaken for a merchant.

/// The merchant of a host name or domain, or why it is not one.
pub fn registrable(text: &str) -> Result<String, String> {
    let host = optin_protocol::signal::plain_domain(text)?;
    // A shop reached by its IPv4 address is that address: the suffix list would read its
    // last two numbers as a "domain" and merge every shop in the same /16 into one.
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(host);
    }
    match psl::domain_str(&host) {
        Some(domain) => Ok(domain.to_owned()),
        None => Err(String::from("a public suffix, not a merchant's domain")),
    }
}

#[cfg(test)]
mod tests {
    use super::registrable;

    #[test]
    fn registrable_domains() {
        for (host, merchant) in [
            ("www.shop.example.co.uk", "example.co.uk"),
            ("shop.example.co.uk", "example.co.uk"),
            ("WWW.Amazon.DE", "amazon.de"),
            ("shoes.example", "shoes.example"),
            ("a.b.shoes.example.", "shoes.example"),
            ("foo.github.io", "foo.github.io"),
            ("192.168.1.20", "192.168.1.20"),
            ("10.0.0.1.", "10.0.0.1"),
        ] {
            assert_eq!(registrable(host).as_deref(), Ok(merchant), "{host}");
        }
    }

    #[test]
    fn rejects_non_merchants() {
        for host in ["co.uk", "localhost", "", "shop..example", "-x.example", "sh op.example"] {
            assert!(registrable(host).is_err(), "{host}");
        }
    }
}
