//! A cookie-keeping HTTP client that reads our HTML pages and submits their
//! forms the way a browser does: every `<input>` of the form with its value,
//! plus what the "user" types. Redirects are not followed, so that tests see
//! each `Location`.

use std::collections::HashMap;
use std::sync::Mutex;

pub struct Browser {
    base: String,
    http: reqwest::Client,
    jar: Mutex<HashMap<String, String>>,
    /// X-Forwarded-For, so that SMS limits per IP do not meet across tests.
    ip: String,
}

#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub headers: reqwest::header::HeaderMap,
    pub html: String,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            jar: Mutex::new(HashMap::new()),
            ip: super::new_ip(),
        }
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') {
            format!("{}{}", self.base, url)
        } else {
            url.to_string()
        }
    }

    fn cookie_header(&self) -> String {
        let jar = self.jar.lock().expect("jar");
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().expect("jar").get(name).cloned()
    }

    pub fn put_cookie(&self, name: &str, value: &str) {
        self.jar
            .lock()
            .expect("jar")
            .insert(name.to_string(), value.to_string());
    }

    pub fn forget_cookie(&self, name: &str) {
        self.jar.lock().expect("jar").remove(name);
    }

    async fn finish(&self, response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let set_cookies: Vec<String> = headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        {
            let mut jar = self.jar.lock().expect("jar");
            for c in &set_cookies {
                let pair = c.split(';').next().unwrap_or("");
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let removal = c.to_ascii_lowercase().contains("max-age=0");
                if removal || value.is_empty() {
                    jar.remove(name.trim());
                } else {
                    jar.insert(name.trim().to_string(), value.trim().to_string());
                }
            }
        }
        Page {
            status,
            location: headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            set_cookies,
            headers,
            html: response.text().await.expect("body"),
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        let response = self
            .http
            .get(self.absolute(url))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .header("X-Forwarded-For", &self.ip)
            .send()
            .await
            .expect("GET");
        self.finish(response).await
    }

    pub async fn post(&self, url: &str, fields: &[(String, String)]) -> Page {
        let response = self
            .http
            .post(self.absolute(url))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .header("X-Forwarded-For", &self.ip)
            .form(fields)
            .send()
            .await
            .expect("POST");
        self.finish(response).await
    }

    /// Logs in on the phone and code pages from `start`; returns the page
    /// after the redirect back to the authorization request (the consent page).
    pub async fn log_in(&self, server: &super::TestServer, start: &Page, phone: &str) -> Page {
        assert_eq!(start.status, 200, "{}", start.html);
        let code_page = self
            .submit(start, "/o/authorize/phone/", &[("phone", phone)])
            .await;
        assert_eq!(code_page.status, 200, "{}", code_page.html);
        let code = server.sms.last_code(phone);
        let logged_in = self
            .submit(&code_page, "/o/authorize/code/", &[("code", &code)])
            .await;
        assert_eq!(logged_in.status, 303, "{}", logged_in.html);
        let back = logged_in.location.clone().expect("back to authorize");
        assert!(back.starts_with("/o/authorize/?"), "{back}");
        self.get(&back).await
    }

    /// Submits the page's form whose action is `action`, with its inputs
    /// plus `typed` (which replace inputs of the same name).
    pub async fn submit(&self, page: &Page, action: &str, typed: &[(&str, &str)]) -> Page {
        let mut fields = page.form(action);
        for (name, value) in typed {
            fields.retain(|(n, _)| n != name);
            fields.push((name.to_string(), value.to_string()));
        }
        self.post(action, &fields).await
    }
}

impl Page {
    /// The `(name, value)` of every input of the form posting to `action`.
    #[track_caller]
    pub fn form(&self, action: &str) -> Vec<(String, String)> {
        let marker = format!("action=\"{action}\"");
        let start = self
            .html
            .find(&marker)
            .unwrap_or_else(|| panic!("no form posting to {action} in:\n{}", self.html));
        let end = self.html[start..]
            .find("</form>")
            .map_or(self.html.len(), |e| start + e);
        let form = &self.html[start..end];
        form.split("<input")
            .skip(1)
            .filter_map(|tag| {
                let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
                let name = attribute(tag, "name")?;
                Some((name, attribute(tag, "value").unwrap_or_default()))
            })
            .collect()
    }

    /// The page's markup with character references decoded, as a reader sees it.
    pub fn text(&self) -> String {
        unescape(&self.html)
    }

    pub fn has_form(&self, action: &str) -> bool {
        self.html.contains(&format!("action=\"{action}\""))
    }

    /// The `Set-Cookie` line for `name`.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(String::as_str)
    }

    /// The redirect's query parameters.
    #[track_caller]
    pub fn redirect_params(&self) -> HashMap<String, String> {
        let location = self.location.as_deref().expect("a redirect");
        url::Url::parse(location)
            .expect("absolute Location")
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// Decodes HTML character references, named (the five XML ones) and numeric.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
