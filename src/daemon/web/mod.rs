//! The web status page: a read-only view of the [`StatusBoard`] for people.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the overview: every source, its revision, last sync, drift and health |
//! | `GET /sources/{name}` | one source: objects, masked diffs, evidence, recent syncs |
//! | `GET /api/events` | Server-Sent Events: `changed` whenever the board is written |
//! | `GET /assets/app.js`, `/assets/app.css` | the page's script and style |
//! | `GET`, `POST /login` | with a token: the form that signs a browser in ([`mod@login`]) |
//!
//! Server-rendered HTML ([`minijinja`], templates embedded with `include_str!`),
//! so the page works with JavaScript off (a `<noscript>` refresh, plain links).
//! With it on, `app.js` listens to `/api/events` and, on each event, fetches the
//! same page with `?fragment` (only its `<main>`) and swaps it in: the page
//! follows a sync, a drift or a health change within a second, without a reload.
//! The events come from the board's own change signal
//! ([`StatusBoard::subscribe`]): no polling of the board or of the cluster.
//!
//! Every answer carries a strict Content-Security-Policy: scripts and styles only
//! from this origin's `/assets/`, nothing inline, no frames. Who may read the
//! page is the server's [`super::server`] `Access` rule, as for `/status`.

mod login;
mod view;

pub(crate) use login::{cookie_token, form as login_form, wants_html};

use crate::daemon::server::ServerState;
use crate::daemon::status::StatusBoard;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use minijinja::Environment;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Scripts and styles from this origin only, never inline; the page's `fetch`
/// and `EventSource` go to this origin too; it may not be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self'; connect-src 'self'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// How long the event stream waits after a change for more of them: a reconcile
/// writes the board several times in a row (objects, health, evidence), and one
/// event for all of them spares the browser as many fetches.
const SETTLE: Duration = Duration::from_millis(50);

/// A comment line on an idle stream, so proxies do not cut it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The templates, parsed once. Autoescaping is on for `.html`, so every name,
/// message and diff the status holds is escaped.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    let templates = [
        ("layout.html", include_str!("templates/layout.html")),
        ("parts.html", include_str!("templates/parts.html")),
        ("overview.html", include_str!("templates/overview.html")),
        ("source.html", include_str!("templates/source.html")),
        ("missing.html", include_str!("templates/missing.html")),
        ("login.html", include_str!("templates/login.html")),
    ];
    for (name, text) in templates {
        // The templates are part of the binary; `templates_parse` tests them all.
        if let Err(error) = env.add_template(name, text) {
            tracing::error!(template = name, %error, "a built-in template does not parse");
        }
    }
    env
});

/// Whether the daemon is shutting down: open event streams end then, so that a
/// graceful shutdown does not wait for browsers to go away.
#[derive(Clone)]
pub(crate) struct Closing(watch::Receiver<bool>);

impl Closing {
    pub(crate) fn new(closing: watch::Receiver<bool>) -> Self {
        Closing(closing)
    }

    async fn wait(&mut self) {
        // A dropped sender means nobody can announce a shutdown: treat as begun.
        let _ = self.0.wait_for(|closing| *closing).await;
    }
}

/// The page's routes; the server adds its access rule around them.
pub(crate) fn routes(closing: Closing) -> Router<ServerState> {
    Router::new()
        .route("/", get(overview))
        .route("/sources/{name}", get(source))
        .route(
            "/api/events",
            get(move |State(state): State<ServerState>| events(state.status, closing.clone())),
        )
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style))
        .layer(axum::middleware::map_response(secure_headers))
}

/// The routes open to all: the login form (what it checks is the token).
pub(crate) fn open_routes() -> Router<ServerState> {
    Router::new().route("/login", get(login_page).post(login))
}

async fn login_page(State(state): State<ServerState>) -> Response {
    login::form(StatusCode::OK, state.access.has_token(), None)
}

/// A right token signs the browser in; a wrong one gets the form again, 401.
async fn login(State(state): State<ServerState>, body: axum::body::Bytes) -> Response {
    let offered = login::submitted_token(&body);
    match (&offered, state.access.token()) {
        (Some(offered), Some(token))
            if crate::daemon::server::same_secret(offered.as_bytes(), token.as_bytes()) =>
        {
            login::signed_in(offered)
        }
        (_, Some(_)) => {
            tracing::warn!("refused: a wrong token at /login");
            login::form(
                StatusCode::UNAUTHORIZED,
                true,
                Some("That is not the token.".to_owned()),
            )
        }
        (_, None) => login::form(StatusCode::NOT_FOUND, false, None),
    }
}

/// The CSP and its companions on every answer of the page's routes.
async fn secure_headers(mut response: Response) -> Response {
    secure(response.headers_mut());
    response
}

/// Sets the CSP and its companions on `headers`.
fn secure(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// Which part of a page to send: the whole document, or only what `<main>`
/// holds, for the script to swap in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Document,
    Fragment,
}

impl Part {
    fn of(query: Option<&str>) -> Part {
        let fragment = query.is_some_and(|q| q.split('&').any(|p| p == "fragment"));
        if fragment {
            Part::Fragment
        } else {
            Part::Document
        }
    }
}

async fn overview(State(state): State<ServerState>, RawQuery(query): RawQuery) -> Response {
    let report = state.status.report();
    let view = view::overview(&report, SystemTime::now());
    let page = Page {
        title: "sources".to_owned(),
        path: "/".to_owned(),
        version: report.version.clone(),
        live: true,
    };
    render(
        StatusCode::OK,
        "overview.html",
        &view,
        &page,
        Part::of(query.as_deref()),
    )
}

async fn source(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let part = Part::of(query.as_deref());
    let path = format!("/sources/{}", view::path_segment(&name));
    let version = env!("CARGO_PKG_VERSION").to_owned();
    let Some(source) = state.status.source(&name) else {
        let page = Page {
            title: "no such source".to_owned(),
            path,
            version,
            live: true,
        };
        let missing = Missing { name };
        return render(StatusCode::NOT_FOUND, "missing.html", &missing, &page, part);
    };
    let view = view::source_page(&source, SystemTime::now());
    let page = Page {
        title: name,
        path,
        version,
        live: true,
    };
    render(StatusCode::OK, "source.html", &view, &page, part)
}

/// What the layout needs besides the content.
#[derive(Serialize)]
struct Page {
    title: String,
    /// This page's path, which the script fetches again with `?fragment`.
    path: String,
    version: String,
    /// Whether the page follows the status (the script listens to `/api/events`,
    /// and without script it refreshes); not the login form.
    live: bool,
}

#[derive(Serialize)]
struct Missing {
    name: String,
}

/// Renders `template` with `view` as the fragment, and inside the layout unless
/// only the fragment is asked for.
fn render(
    code: StatusCode,
    template: &str,
    view: &impl Serialize,
    page: &Page,
    part: Part,
) -> Response {
    let fragment = match fragment(template, view) {
        Ok(html) => html,
        Err(error) => return broken(template, &error),
    };
    if part == Part::Fragment {
        return (code, Html(fragment)).into_response();
    }
    document(code, fragment, page)
}

/// `template` with `view`, inside the layout.
fn render_page(code: StatusCode, template: &str, view: &impl Serialize, page: &Page) -> Response {
    match fragment(template, view) {
        Ok(html) => document(code, html, page),
        Err(error) => broken(template, &error),
    }
}

fn fragment(template: &str, view: &impl Serialize) -> Result<String, minijinja::Error> {
    TEMPLATES
        .get_template(template)
        .and_then(|t| t.render(minijinja::value::Serde(view)))
}

/// A whole document: the layout around `content`.
fn document(code: StatusCode, content: String, page: &Page) -> Response {
    let context = minijinja::context! {
        page => minijinja::value::Serde(page),
        content => minijinja::Value::from_safe_string(content),
    };
    match TEMPLATES
        .get_template("layout.html")
        .and_then(|t| t.render(context))
    {
        Ok(html) => (code, Html(html)).into_response(),
        Err(error) => broken("layout.html", &error),
    }
}

/// A template that fails to render is converge's bug: logged with the template,
/// answered as a plain 500.
fn broken(template: &str, error: &minijinja::Error) -> Response {
    tracing::error!(template, %error, "rendering the web page failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("converge could not render {template}: {error}"),
    )
        .into_response()
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// An asset, cached briefly: they change only with the binary.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        ),
    ];
    (headers, body).into_response()
}

/// `GET /api/events`: one `changed` event at once (the page may have missed
/// changes between its render and this connection), then one per burst of
/// writes to the board, until the client goes or the daemon shuts down.
async fn events(
    board: StatusBoard,
    closing: Closing,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changed = board.subscribe();
    let stream = futures::stream::unfold(
        (changed, closing, true),
        |(mut changed, mut closing, first)| async move {
            if !first {
                tokio::select! {
                    seen = changed.changed() => seen.ok()?,
                    () = closing.wait() => return None,
                }
                tokio::time::sleep(SETTLE).await;
            }
            let generation = *changed.borrow_and_update();
            let event = Event::default()
                .event("changed")
                .data(generation.to_string());
            Some((Ok(event), (changed, closing, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        for name in [
            "layout.html",
            "parts.html",
            "overview.html",
            "source.html",
            "missing.html",
            "login.html",
        ] {
            assert!(TEMPLATES.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn a_fragment_is_asked_for_by_query() {
        assert_eq!(Part::of(None), Part::Document);
        assert_eq!(Part::of(Some("fragment")), Part::Fragment);
        assert_eq!(Part::of(Some("x=1&fragment")), Part::Fragment);
        assert_eq!(Part::of(Some("fragments")), Part::Document);
    }

    #[test]
    fn pages_render_escaped_and_whole() {
        use crate::daemon::status::test_support::sample_report;
        let mut report = sample_report();
        report.sources[0].objects[1].diff = Some("-  a: <script>x</script>\n+  a: 2".into());
        let view = view::overview(&report, SystemTime::now());
        let page = Page {
            title: "sources".into(),
            path: "/".into(),
            version: "0.1.0".into(),
            live: true,
        };
        let response = render(
            StatusCode::OK,
            "overview.html",
            &view,
            &page,
            Part::Document,
        );
        assert_eq!(response.status(), StatusCode::OK);
        let source = view::source_page(&report.sources[0], SystemTime::now());
        let html = TEMPLATES
            .get_template("source.html")
            .and_then(|t| t.render(minijinja::value::Serde(&source)))
            .expect("renders");
        assert!(
            html.contains("&lt;script&gt;x&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>x"), "{html}");
        assert!(
            html.contains("Deployment.apps&#x2f;shop&#x2f;web"),
            "{html}"
        );
    }
}
