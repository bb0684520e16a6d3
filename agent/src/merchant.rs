//! Merchants are registrable domains: `www.shop.example.co.uk` and `shop.example.co.uk` are
//! one merchant. The public suffix list (the `psl` crate, compiled in) decides where the
//! registrable part starts, so `co.uk` is never mistaken for a merchant.

/// The merchant of a host name or domain, or why it is not one.
pub fn registrable(text: &str) -> Result<String, String> {
    let host = optin_protocol::signal::plain_domain(text)?;
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
