"""SMART App Launch 2.x / OAuth 2.0 flows of a confidential client against a token-enforcing
Portico, driven from Python with authlib (OAuth2Session, PKCE S256, client_secret_basic) and
checked with fhirclient: the standalone launch as `member` and as `parent` (patient picker),
consent choices, the ID token, and the failure cases (code reuse, redirect_uri and aud
mismatches, PKCE, expired codes, refresh-token rotation and reuse, scope narrowing and
broadening, revocation, introspection, client authentication).

Each storage backend gets its own `portico demo` server (SQLite temp file, throw-away
PostgreSQL database; PostgreSQL unreachable -> skip unless PORTICO_REQUIRE_POSTGRES=1) with
`[auth] code_seconds = 3`, and two confidential apps registered through `portico client add`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from fhirclient import client as fhir_client
from fhirclient.auth import FHIROAuth2Auth
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRUnauthorizedException

with warnings.catch_warnings():
    # authlib.jose is deprecated in favour of joserfc (authlib's own dependency) but is kept
    # until Authlib 2.0; the import warns once.
    warnings.filterwarnings("ignore", message="authlib.jose module is deprecated")
    from authlib.jose import JsonWebKey, JsonWebToken

from portico_support import (
    PG_ADMIN_URL,
    PorticoServer,
    free_port,
    pg_create_database,
    pg_drop_database,
    portico_bin,
    required,
)

PASSWORD = "portico-demo"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # nothing listens there: the redirect is captured
CODE_SECONDS = 3
# launch/patient asks for the patient picker, openid + fhirUser for the ID token.
FULL_SCOPE = "launch/patient patient/*.rs openid fhirUser offline_access"
FULL_SCOPES = set(FULL_SCOPE.split())
FHIR_JSON = "application/fhir+json"


# ---------------------------------------------------------------------------------------------
# The server: `portico demo` (sample data and accounts), tokens enforced


@dataclass
class App:
    client_id: str
    client_secret: str
    redirect_uri: str = REDIRECT_URI

    @property
    def basic(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)


class DemoServer(PorticoServer):
    """`portico demo` on a free loopback port: generated patients, the demo accounts, and a
    server that requires tokens (no --dev-open-access)."""

    def __init__(self, database_url: str, log_dir: Path, config: Path, patients: int = 6):
        super().__init__(database_url, log_dir, extra_args=["--config", str(config)])
        self.patients = patients
        self.banner = ""

    def start(self) -> "DemoServer":
        last_error = ""
        for _attempt in range(3):
            port = self._spawn()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                if "Ctrl-C" in text:
                    self.banner = text
                    break
                if self.proc.poll() is not None:
                    last_error = f"portico demo exited with code {self.proc.returncode}"
                    break
                time.sleep(0.1)
            else:
                last_error = "portico demo did not print its banner within 120 s"
                self.stop()
                continue
            if not self.banner:
                continue
            expected = f"FHIR base URL        http://127.0.0.1:{port}/fhir"
            if expected not in self.banner:
                raise RuntimeError(f"unexpected demo banner (wanted {expected!r}):\n{self.banner}")
            try:
                if self.http.get(f"{self.origin}/readyz", timeout=10).status_code == 200:
                    return self
                last_error = "/readyz did not answer 200 after the banner"
            except requests.RequestException as e:
                last_error = f"/readyz failed after the banner: {e}"
            self.stop()
        raise RuntimeError(f"{last_error}\n--- server log ---\n{self.log_tail()}")

    def _spawn(self) -> int:
        port = free_port()
        self.origin = f"http://127.0.0.1:{port}"
        self.base = f"{self.origin}/fhir"
        self.banner = ""
        # A fresh log per attempt, so the banner search only sees this process.
        log = open(self.log_path, "wb")
        env = dict(os.environ, PORTICO_LOG=os.environ.get("PORTICO_LOG", "warn"))
        self.proc = subprocess.Popen(
            [
                str(portico_bin()),
                "demo",
                "--no-link",
                "--patients",
                str(self.patients),
                "--listen",
                f"127.0.0.1:{port}",
                "--database-url",
                self.database_url,
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(self.log_path.parent),
        )
        log.close()
        return port

    @property
    def member_id(self) -> str:
        m = re.search(r"the member is Patient/([A-Za-z0-9.\-]+)\.", self.banner)
        assert m, f"no member patient in the demo banner:\n{self.banner}"
        return m.group(1)

    @property
    def parent_children(self) -> list[str]:
        line = next((l for l in self.banner.splitlines() if l.strip().startswith("parent ")), "")
        ids = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", line)
        assert len(ids) == 2, f"expected two children on the parent line of the banner:\n{self.banner}"
        return ids

    def add_client(self, name: str, public: bool = False) -> App:
        cmd = [
            str(portico_bin()),
            "client",
            "add",
            "--database-url",
            self.database_url,
            "--name",
            name,
            *([] if public else ["--confidential"]),
            "--redirect-uri",
            REDIRECT_URI,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"portico client add failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        doc = json.loads(proc.stdout)
        assert doc["redirect_uris"] == [REDIRECT_URI], doc
        if public:
            assert "client_secret" not in doc and doc["token_endpoint_auth_method"] == "none", doc
            return App(doc["client_id"], "")
        assert doc.get("client_secret"), doc
        return App(doc["client_id"], doc["client_secret"])


@dataclass
class Smart:
    kind: str
    server: DemoServer
    app: App
    other_app: App
    public_app: App
    other_public_app: App
    config: dict = field(repr=False)

    @property
    def origin(self) -> str:
        return self.server.origin

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def token_endpoint(self) -> str:
        return self.config["token_endpoint"]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def smart(request, binary) -> Smart:
    kind = request.param
    work = Path(tempfile.mkdtemp(prefix=f"portico-pytest-smart-{kind}-"))
    pg_name = None
    if kind == "sqlite":
        database_url = str(work / "portico.db")
    else:
        try:
            pg_name, database_url = pg_create_database()
        except Exception as e:  # noqa: BLE001 - any connection problem means "unreachable"
            shutil.rmtree(work, ignore_errors=True)
            message = f"PostgreSQL not reachable at {PG_ADMIN_URL} ({type(e).__name__}: {e})"
            if required("PORTICO_REQUIRE_POSTGRES"):
                pytest.fail(f"{message}; PORTICO_REQUIRE_POSTGRES=1", pytrace=False)
            pytest.skip(f"{message}; set PORTICO_REQUIRE_POSTGRES=1 to make this a failure")
    config = work / "portico.toml"
    config.write_text(f"[auth]\ncode_seconds = {CODE_SECONDS}\n")
    server = DemoServer(database_url, work, config)
    try:
        server.start()
        app = server.add_client("Python Confidential App")
        other = server.add_client("Python Other App")
        public = server.add_client("Python Public App", public=True)
        other_public = server.add_client("Python Other Public App", public=True)
        discovery = requests.get(f"{server.base}/.well-known/smart-configuration", timeout=30)
        assert discovery.status_code == 200, discovery.text
        yield Smart(kind, server, app, other, public, other_public, discovery.json())
    finally:
        server.stop()
        if pg_name is not None:
            pg_drop_database(pg_name)
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The browser side: sign-in, patient picker, consent


class _Forms(HTMLParser):
    """The forms of a page: action, hidden/checkbox inputs and submit buttons."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "inputs": [], "buttons": []})
        elif self.forms and tag == "input":
            self.forms[-1]["inputs"].append(a)
        elif self.forms and tag == "button":
            self.forms[-1]["buttons"].append(a)


def page_form(resp: requests.Response, action: str) -> dict:
    assert resp.status_code == 200, f"{resp.url}: {resp.status_code} {resp.text[:500]}"
    parser = _Forms()
    parser.feed(resp.text)
    forms = [f for f in parser.forms if f["action"] == action]
    assert len(forms) == 1, f"{resp.url}: expected one form posting to {action}, got {parser.forms}"
    form = forms[0]
    form["hidden"] = {i["name"]: i.get("value", "") for i in form["inputs"] if i.get("type") == "hidden"}
    assert form["hidden"].get("req") and form["hidden"].get("csrf"), f"{resp.url}: no req/csrf in {form}"
    return form


@dataclass
class Callback:
    """The redirect to the app (the end of the authorization request)."""

    url: str
    params: dict[str, str]


def callback_of(resp: requests.Response, redirect_uri: str = REDIRECT_URI) -> Callback:
    assert resp.status_code == 303, f"expected 303 to the app, got {resp.status_code}: {resp.text[:500]}"
    location = resp.headers["Location"]
    assert location.startswith(redirect_uri + "?"), f"redirect is not to the app: {location}"
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    return Callback(location, params)


class Browser:
    """One person's browser: a cookie jar bound to the authorization request. Redirects are
    followed by hand, so the final one to the app's (dead) redirect_uri is captured."""

    def __init__(self, smart: Smart):
        self.smart = smart
        self.http = requests.Session()
        self.pages: list[str] = []  # the /auth/ pages visited, in order
        self.patient_choices: list[str] = []  # what the patient picker offered
        self.offered: list[str] = []  # the permission lines (scope checkboxes) of the consent page

    def _follow(self, resp: requests.Response) -> requests.Response | None:
        """GET the next /auth/ page after a 303, or None when it goes to the app."""
        assert resp.status_code == 303, f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text[:500]}"
        location = resp.headers["Location"]
        target = urljoin(self.smart.origin + "/", location)
        if not target.startswith(self.smart.origin + "/auth/"):
            return None
        self.pages.append(urlsplit(target).path)
        return self.http.get(target, allow_redirects=False, timeout=30)

    def authorize(
        self,
        url: str,
        username: str = "member",
        patient: str | None = None,
        keep: set[str] | None = None,
        decision: str = "allow",
    ) -> Callback:
        """Go through /authorize, sign-in, the patient picker (choosing `patient`), and consent
        (keeping the `keep` permissions, default all offered); return the redirect to the app."""
        first = self.http.get(url, allow_redirects=False, timeout=30)
        page = self._follow(first)
        if page is None:  # an error sent straight back to the app
            return callback_of(first)
        form = page_form(page, "/auth/signin")
        names = {i.get("name") for i in form["inputs"]}
        assert {"username", "password"} <= names, form
        resp = self.http.post(
            urljoin(self.smart.origin, "/auth/signin"),
            data={**form["hidden"], "username": username, "password": PASSWORD},
            allow_redirects=False,
            timeout=30,
        )
        page = self._follow(resp)
        if page is not None and self.pages[-1] == "/auth/patient":
            form = page_form(page, "/auth/patient")
            choices = [b["value"] for b in form["buttons"] if b.get("name") == "patient"]
            self.patient_choices = choices
            assert patient in choices, f"patient {patient} not offered by the picker: {choices}"
            resp = self.http.post(
                urljoin(self.smart.origin, "/auth/patient"),
                data={**form["hidden"], "patient": patient},
                allow_redirects=False,
                timeout=30,
            )
            page = self._follow(resp)
        else:
            assert patient is None, "a patient was to be chosen but no picker was shown"
        assert page is not None and self.pages[-1] == "/auth/consent", f"no consent page: {self.pages}"
        form = page_form(page, "/auth/consent")
        checkboxes = [i for i in form["inputs"] if i.get("type") == "checkbox"]
        offered = [i["value"] for i in checkboxes if i.get("name") == "scope"]
        self.offered = offered
        if keep is not None:
            assert set(keep) <= set(offered), f"consent offers {offered}, wanted to keep {keep}"
        # Like a browser: the boxes ticked by default are sent (permission lines, their category
        # sub-choices; the sensitive-record shares start unticked), except the permission lines
        # the person unticks (those not in `keep`).
        ticked = [
            (i["name"], i["value"])
            for i in checkboxes
            if "checked" in i and not (i.get("name") == "scope" and keep is not None and i["value"] not in keep)
        ]
        buttons = {b.get("value") for b in form["buttons"] if b.get("name") == "decision"}
        assert buttons == {"allow", "deny"}, form["buttons"]
        resp = self.http.post(
            urljoin(self.smart.origin, "/auth/consent"),
            data=[*form["hidden"].items(), ("decision", decision), *ticked],
            allow_redirects=False,
            timeout=30,
        )
        assert self._follow(resp) is None, f"consent did not end at the app: {resp.headers.get('Location')}"
        return callback_of(resp)


# ---------------------------------------------------------------------------------------------
# The app side


@dataclass
class Authorization:
    session: OAuth2Session
    url: str
    state: str
    nonce: str
    verifier: str
    callback: Callback | None = None
    responses: list[requests.Response] = field(default_factory=list)  # token endpoint answers

    @property
    def code(self) -> str:
        assert self.callback is not None
        assert "code" in self.callback.params, f"no code in the callback: {self.callback.url}"
        return self.callback.params["code"]


def new_authorization(
    smart: Smart, scope: str = FULL_SCOPE, app: App | None = None, auth_method: str = "client_secret_basic", **params
) -> Authorization:
    """An authlib OAuth2Session and the authorization URL (PKCE S256, aud, state, nonce)."""
    app = app or smart.app
    session = OAuth2Session(
        app.client_id,
        app.client_secret,
        scope=scope,
        redirect_uri=app.redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method=auth_method,
    )
    verifier = generate_token(64)
    nonce = generate_token(20)
    params.setdefault("aud", smart.base)
    url, state = session.create_authorization_url(
        smart.config["authorization_endpoint"], code_verifier=verifier, nonce=nonce, **params
    )
    auth = Authorization(session, url, state, nonce, verifier)
    session.hooks["response"].append(lambda r, *a, **kw: auth.responses.append(r))
    return auth


def authorize(
    smart: Smart, username: str = "member", scope: str = FULL_SCOPE, patient=None, keep=None, **params
) -> Authorization:
    """Authorization request through consent: the code is in `.callback`."""
    auth = new_authorization(smart, scope, **params)
    auth.callback = Browser(smart).authorize(auth.url, username=username, patient=patient, keep=keep)
    assert auth.callback.params.get("state") == auth.state, auth.callback.url
    assert set(auth.callback.params) == {"code", "state"}, auth.callback.url
    return auth


def exchange(smart: Smart, auth: Authorization) -> dict:
    """The code exchange through authlib (client_secret_basic, code_verifier)."""
    token = auth.session.fetch_token(
        smart.token_endpoint,
        authorization_response=auth.callback.url,
        state=auth.state,
        code_verifier=auth.verifier,
    )
    return dict(token)


def grant(smart: Smart, username: str = "member", scope: str = FULL_SCOPE, **kw) -> dict:
    return exchange(smart, authorize(smart, username, scope, **kw))


def token_post(
    smart: Smart, data: dict, app: App | None = None, how: str = "basic", secret: str | None = None
) -> requests.Response:
    """A raw token endpoint request; `how` is basic, post or none (client_id only)."""
    app = app or smart.app
    secret = app.client_secret if secret is None else secret
    kw: dict = {}
    data = dict(data)
    if how == "basic":
        kw["auth"] = (app.client_id, secret)
    elif how == "post":
        data.update(client_id=app.client_id, client_secret=secret)
    elif how == "none":
        data.update(client_id=app.client_id)
    return requests.post(smart.token_endpoint, data=data, timeout=30, **kw)


def code_exchange(smart: Smart, auth: Authorization, **overrides) -> requests.Response:
    data = {
        "grant_type": "authorization_code",
        "code": auth.code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": auth.verifier,
        **overrides,
    }
    return token_post(smart, {k: v for k, v in data.items() if v is not None})


def refresh(smart: Smart, refresh_token: str, scope: str | None = None, **kw) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope is not None:
        data["scope"] = scope
    return token_post(smart, data, **kw)


def oauth_error(resp: requests.Response, status: int, error: str) -> dict:
    """Assert an RFC 6749 error answer and return its body."""
    assert resp.status_code == status, f"expected {status} {error}, got {resp.status_code}: {resp.text[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    assert "no-store" in resp.headers.get("Cache-Control", ""), resp.headers
    body = resp.json()
    assert body.get("error") == error, body
    assert isinstance(body.get("error_description"), str) and body["error_description"], body
    return body


def token_ok(resp: requests.Response) -> dict:
    assert resp.status_code == 200, f"token request failed: {resp.status_code} {resp.text[:500]}"
    assert "no-store" in resp.headers.get("Cache-Control", ""), resp.headers
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["access_token"], body
    return body


def fhir_get(smart: Smart, path: str, token: str | None) -> requests.Response:
    headers = {"Accept": FHIR_JSON}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{smart.base}/{path}", headers=headers, timeout=30)


def assert_patient_readable(smart: Smart, token: str, patient_id: str) -> None:
    resp = fhir_get(smart, f"Patient/{patient_id}", token)
    assert resp.status_code == 200, f"Patient/{patient_id}: {resp.status_code} {resp.text[:500]}"
    assert resp.headers["Content-Type"].startswith(FHIR_JSON)
    body = resp.json()
    assert (body["resourceType"], body["id"]) == ("Patient", patient_id)


def assert_token_dead(smart: Smart, token: str, patient_id: str) -> None:
    resp = fhir_get(smart, f"Patient/{patient_id}", token)
    assert resp.status_code == 401, f"a dead token read Patient/{patient_id}: {resp.status_code} {resp.text[:300]}"
    challenge = resp.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer") and 'error="invalid_token"' in challenge, challenge


def introspect(smart: Smart, token: str, app: App | None = None, **extra) -> dict:
    app = app or smart.app
    resp = requests.post(smart.config["introspection_endpoint"], data={"token": token, **extra}, auth=app.basic, timeout=30)
    assert resp.status_code == 200, f"introspection: {resp.status_code} {resp.text[:500]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    return resp.json()


def revoke(smart: Smart, token: str, app: App | None = None, **extra) -> requests.Response:
    app = app or smart.app
    return requests.post(smart.config["revocation_endpoint"], data={"token": token, **extra}, auth=app.basic, timeout=30)


def assert_grant_dead(smart: Smart, token: dict, patient_id: str) -> None:
    """Both tokens of a grant are dead: FHIR 401, refresh invalid_grant, introspection inactive."""
    assert_token_dead(smart, token["access_token"], patient_id)
    assert introspect(smart, token["access_token"]) == {"active": False}
    if "refresh_token" in token:
        assert introspect(smart, token["refresh_token"]) == {"active": False}
        oauth_error(refresh(smart, token["refresh_token"]), 400, "invalid_grant")


def _jwt_part(token: str, index: int) -> dict:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwt_claims(token: str) -> dict:
    """The unverified payload of a JWT (for looking at access tokens)."""
    return _jwt_part(token, 1)


# ---------------------------------------------------------------------------------------------
# Discovery


def test_smart_configuration(smart):
    c = smart.config
    assert c["issuer"] == smart.base
    for name in ("authorization_endpoint", "token_endpoint", "introspection_endpoint", "revocation_endpoint", "jwks_uri"):
        assert c[name].startswith(smart.origin + "/auth/"), (name, c[name])
    assert c["code_challenge_methods_supported"] == ["S256"]
    assert {"client_secret_basic", "client_secret_post"} <= set(c["token_endpoint_auth_methods_supported"])
    assert {"authorization_code", "refresh_token"} <= set(c["grant_types_supported"])
    assert "code" in c["response_types_supported"]
    assert {
        "launch-standalone",
        "client-confidential-symmetric",
        "context-standalone-patient",
        "sso-openid-connect",
        "permission-offline",
        "permission-v2",
    } <= set(c["capabilities"])
    assert FULL_SCOPES <= set(c["scopes_supported"])


def test_fhir_api_requires_a_token(smart):
    resp = fhir_get(smart, f"Patient/{smart.server.member_id}", None)
    assert resp.status_code == 401, resp.text[:300]
    assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer"), resp.headers
    resp = fhir_get(smart, f"Patient/{smart.server.member_id}", "not-a-token")
    assert resp.status_code == 401
    assert 'error="invalid_token"' in resp.headers.get("WWW-Authenticate", ""), resp.headers


# ---------------------------------------------------------------------------------------------
# Happy paths


def test_member_standalone_launch(smart):
    member = smart.server.member_id
    auth = authorize(smart, "member")
    token = exchange(smart, auth)

    # The token response (RFC 6749 5.1 + SMART): no-store, Bearer, expiry, scope, context.
    resp = auth.responses[-1]
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "no-store" in resp.headers.get("Cache-Control", ""), resp.headers
    assert token["token_type"] == "Bearer"
    assert isinstance(token["expires_in"], int) and 0 < token["expires_in"] <= 3600, token
    assert set(token["scope"].split()) == FULL_SCOPES, token["scope"]
    assert token["patient"] == member
    assert token.get("refresh_token"), "offline_access was granted: a refresh token is due"
    assert token["refresh_token"] != token["access_token"]
    assert token.get("id_token"), "openid was granted: an ID token is due"

    # The ID token, verified against the published JWKS.
    jwks = requests.get(smart.config["jwks_uri"], timeout=30)
    assert jwks.status_code == 200
    keys = JsonWebKey.import_key_set(jwks.json())
    header = _jwt_part(token["id_token"], 0)
    assert header["alg"] in ("RS256", "ES256", "RS384", "ES384"), header
    claims = JsonWebToken([header["alg"]]).decode(
        token["id_token"],
        keys,
        claims_options={
            "iss": {"essential": True, "value": smart.config["issuer"]},
            "aud": {"essential": True, "value": smart.app.client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "nonce": {"essential": True, "value": auth.nonce},
        },
    )
    claims.validate(leeway=5)
    assert claims["fhirUser"] in (f"Patient/{member}", f"{smart.base}/Patient/{member}"), claims
    assert claims["exp"] > time.time()

    # The access token reads the patient's record, with requests...
    assert_patient_readable(smart, token["access_token"], member)
    # ...and through authlib's session (it signs requests with the fetched token).
    resp = auth.session.get(f"{smart.base}/Patient/{member}", headers={"Accept": FHIR_JSON}, timeout=30)
    assert resp.status_code == 200 and resp.json()["id"] == member

    # ...and with the SMART Python client, given the token.
    client = fhir_client.FHIRClient(
        settings={
            "app_id": smart.app.client_id,
            "app_secret": smart.app.client_secret,
            "api_base": smart.base,
            "redirect_uri": REDIRECT_URI,
            "patient_id": member,
        }
    )
    client.prepare()  # reads the CapabilityStatement: its SMART oauth-uris make an OAuth2 auth
    assert isinstance(client.server.auth, FHIROAuth2Auth), client.server.auth
    assert client.server.auth._token_uri == smart.token_endpoint
    assert client.server.auth._authorize_uri == smart.config["authorization_endpoint"]
    with pytest.raises(FHIRUnauthorizedException):
        Patient.read(member, client.server)  # no token yet
    client.server.auth.access_token = token["access_token"]
    assert client.ready
    patient = client.patient
    assert patient is not None and patient.id == member
    assert patient.name and patient.name[0].family


def test_parent_chooses_a_child(smart):
    child, other_child = smart.server.parent_children
    auth = new_authorization(smart)
    browser = Browser(smart)
    auth.callback = browser.authorize(auth.url, username="parent", patient=child)
    assert browser.pages == ["/auth/signin", "/auth/patient", "/auth/consent"], browser.pages
    assert len(browser.patient_choices) == 3 and {child, other_child} <= set(browser.patient_choices)
    assert auth.callback.params["state"] == auth.state
    token = exchange(smart, auth)
    assert token["patient"] == child
    assert_patient_readable(smart, token["access_token"], child)
    claims = jwt_claims(token["access_token"])
    assert claims["patient"] == child and claims["client_id"] == smart.app.client_id




def test_patient_token_reads_only_its_patient(smart):
    child, other_child = smart.server.parent_children
    auth = new_authorization(smart)
    auth.callback = Browser(smart).authorize(auth.url, username="parent", patient=child)
    token = exchange(smart, auth)
    # The token is for that child only: not the sibling, not another family's member.
    for elsewhere in (other_child, smart.server.member_id):
        resp = fhir_get(smart, f"Patient/{elsewhere}", token["access_token"])
        assert resp.status_code in (403, 404), f"Patient/{elsewhere} with {child}'s token: {resp.status_code}"
    resp = fhir_get(smart, "Patient", token["access_token"])
    assert resp.status_code == 200
    assert [e["resource"]["id"] for e in resp.json().get("entry", [])] == [child]


def test_read_only_token_cannot_write(smart):
    member = smart.server.member_id
    token = grant(smart, scope="launch/patient patient/*.rs")
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "written with a read-only token"},
        "subject": {"reference": f"Patient/{member}"},
    }
    resp = requests.post(
        f"{smart.base}/Observation",
        data=json.dumps(observation),
        headers={"Authorization": f"Bearer {token['access_token']}", "Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        timeout=30,
    )
    assert resp.status_code == 403, f"{resp.status_code} {resp.text[:300]}"


def test_member_is_not_shown_a_picker(smart):
    auth = new_authorization(smart)
    browser = Browser(smart)
    auth.callback = browser.authorize(auth.url, username="member")
    assert browser.pages == ["/auth/signin", "/auth/consent"], browser.pages
    assert set(browser.offered) == {"patient/*.rs", "identity", "offline_access"}, browser.offered


def test_consent_keeps_only_ticked_permissions(smart):
    auth = new_authorization(smart)
    auth.callback = Browser(smart).authorize(auth.url, keep={"patient/*.rs"})
    token = exchange(smart, auth)
    scopes = set(token["scope"].split())
    assert "patient/*.rs" in scopes
    assert not scopes & {"openid", "fhirUser", "offline_access"}, token["scope"]
    assert "refresh_token" not in token, "offline_access was not granted"
    assert "id_token" not in token, "openid was not granted"
    assert token["patient"] == smart.server.member_id
    assert_patient_readable(smart, token["access_token"], smart.server.member_id)


def test_consent_denied(smart):
    auth = new_authorization(smart)
    cb = Browser(smart).authorize(auth.url, decision="deny")
    assert cb.params.get("error") == "access_denied", cb.url
    assert cb.params.get("state") == auth.state
    assert "code" not in cb.params


def test_client_secret_post(smart):
    auth = new_authorization(smart, auth_method="client_secret_post")
    auth.callback = Browser(smart).authorize(auth.url)
    token = exchange(smart, auth)
    request = auth.responses[-1].request
    assert "Authorization" not in request.headers
    assert "client_secret=" in request.body
    assert token["patient"] == smart.server.member_id
    assert_patient_readable(smart, token["access_token"], smart.server.member_id)


# ---------------------------------------------------------------------------------------------
# Authorization codes


def test_code_reuse_revokes_the_grant(smart):
    auth = authorize(smart)
    first = token_ok(code_exchange(smart, auth))
    assert_patient_readable(smart, first["access_token"], smart.server.member_id)
    oauth_error(code_exchange(smart, auth), 400, "invalid_grant")
    # RFC 6749 4.1.2 / OAuth 2.1: the tokens issued for the reused code are revoked.
    assert_grant_dead(smart, first, smart.server.member_id)


def test_code_reuse_through_authlib(smart):
    auth = authorize(smart)
    exchange(smart, auth)
    with pytest.raises(OAuthError) as err:
        exchange(smart, auth)
    assert err.value.error == "invalid_grant"


@pytest.mark.parametrize(
    "case",
    ["other-path", "other-port", "extra-query", "trailing-slash", "unknown-client"],
)
def test_bad_redirect_uri_or_client_at_authorize(smart, case):
    auth = new_authorization(smart)
    params = {k: v[0] for k, v in parse_qs(urlsplit(auth.url).query).items()}
    if case == "other-path":
        params["redirect_uri"] = "http://127.0.0.1:9/elsewhere"
    elif case == "other-port":
        params["redirect_uri"] = "http://127.0.0.1:10/callback"
    elif case == "extra-query":
        params["redirect_uri"] = REDIRECT_URI + "?x=1"
    elif case == "trailing-slash":
        params["redirect_uri"] = REDIRECT_URI + "/"
    elif case == "unknown-client":
        params["client_id"] = "no-such-client"
    url = f"{smart.config['authorization_endpoint']}?{urlencode(params)}"
    resp = requests.get(url, allow_redirects=False, timeout=30)
    # RFC 6749 4.1.2.1: never redirect to an unverified redirect_uri; show an error page.
    assert resp.status_code == 400, f"{case}: {resp.status_code} {resp.headers.get('Location')}"
    assert "Location" not in resp.headers, resp.headers
    assert "<h1>" in resp.text, resp.text[:300]


def test_auth_pages_are_html(smart):
    resp = requests.get(
        smart.config["authorization_endpoint"],
        params={"response_type": "code", "client_id": "no-such-client", "redirect_uri": REDIRECT_URI},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 400
    assert resp.text.lstrip().lower().startswith("<!doctype html>")
    assert resp.headers.get("Content-Type", "").startswith("text/html"), resp.headers
    auth = new_authorization(smart)
    browser = requests.Session()
    first = browser.get(auth.url, allow_redirects=False, timeout=30)
    signin = browser.get(urljoin(smart.origin, first.headers["Location"]), timeout=30)
    assert signin.status_code == 200
    assert signin.headers.get("Content-Type", "").startswith("text/html"), signin.headers


def test_wrong_redirect_uri_at_token_endpoint(smart):
    auth = authorize(smart)
    oauth_error(code_exchange(smart, auth, redirect_uri="http://127.0.0.1:9/elsewhere"), 400, "invalid_grant")


def test_missing_redirect_uri_at_token_endpoint(smart):
    auth = authorize(smart)
    oauth_error(code_exchange(smart, auth, redirect_uri=None), 400, "invalid_request")


@pytest.mark.parametrize("aud", ["https://elsewhere.example/fhir", "{origin}/other/fhir", "{origin}"])
def test_wrong_aud(smart, aud):
    auth = new_authorization(smart, aud=aud.format(origin=smart.origin))
    resp = requests.get(auth.url, allow_redirects=False, timeout=30)
    cb = callback_of(resp)
    assert cb.params.get("error") == "invalid_request", cb.url
    assert cb.params.get("state") == auth.state
    assert cb.params.get("error_description")
    assert "code" not in cb.params


def test_missing_aud(smart):
    auth = new_authorization(smart)
    params = {k: v[0] for k, v in parse_qs(urlsplit(auth.url).query).items()}
    del params["aud"]
    resp = requests.get(f"{smart.config['authorization_endpoint']}?{urlencode(params)}", allow_redirects=False, timeout=30)
    cb = callback_of(resp)
    assert cb.params.get("error") == "invalid_request", cb.url
    assert cb.params.get("state") == auth.state


@pytest.mark.parametrize("pkce", ["plain", "missing", "unknown-method"])
def test_pkce_s256_is_required(smart, pkce):
    auth = new_authorization(smart)
    params = {k: v[0] for k, v in parse_qs(urlsplit(auth.url).query).items()}
    if pkce == "plain":
        params.update(code_challenge=auth.verifier, code_challenge_method="plain")
    elif pkce == "missing":
        del params["code_challenge"], params["code_challenge_method"]
    else:
        params["code_challenge_method"] = "S512"
    resp = requests.get(f"{smart.config['authorization_endpoint']}?{urlencode(params)}", allow_redirects=False, timeout=30)
    cb = callback_of(resp)
    assert cb.params.get("error") == "invalid_request", cb.url
    assert cb.params.get("state") == auth.state
    assert "code" not in cb.params


def test_wrong_code_verifier(smart):
    auth = authorize(smart)
    oauth_error(code_exchange(smart, auth, code_verifier=generate_token(64)), 400, "invalid_grant")


def test_missing_code_verifier(smart):
    auth = authorize(smart)
    oauth_error(code_exchange(smart, auth, code_verifier=None), 400, "invalid_request")


def test_code_of_another_client(smart):
    auth = authorize(smart)
    data = {"grant_type": "authorization_code", "code": auth.code, "redirect_uri": REDIRECT_URI, "code_verifier": auth.verifier}
    oauth_error(token_post(smart, data, app=smart.other_app), 400, "invalid_grant")


def test_expired_code(smart):
    auth = authorize(smart)
    time.sleep(CODE_SECONDS + 1.5)
    oauth_error(code_exchange(smart, auth), 400, "invalid_grant")


def test_unknown_code(smart):
    auth = authorize(smart)
    oauth_error(code_exchange(smart, auth, code=generate_token(43)), 400, "invalid_grant")


# ---------------------------------------------------------------------------------------------
# Refresh tokens


def test_refresh_rotation_and_reuse(smart):
    member = smart.server.member_id
    auth = authorize(smart)
    first = exchange(smart, auth)

    # authlib's refresh: a new access token and a new refresh token.
    second = dict(auth.session.refresh_token(smart.token_endpoint, refresh_token=first["refresh_token"]))
    resp = auth.responses[-1]
    assert resp.status_code == 200 and "no-store" in resp.headers.get("Cache-Control", "")
    assert second["token_type"] == "Bearer"
    assert 0 < second["expires_in"] <= 3600
    assert second["refresh_token"] and second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert set(second["scope"].split()) == FULL_SCOPES
    assert second["patient"] == member
    assert_patient_readable(smart, second["access_token"], member)

    # The used refresh token is dead...
    assert introspect(smart, first["refresh_token"]) == {"active": False}
    third = token_ok(refresh(smart, second["refresh_token"]))
    assert_patient_readable(smart, third["access_token"], member)

    # ...and presenting it again revokes the whole grant, the newest tokens included.
    oauth_error(refresh(smart, first["refresh_token"]), 400, "invalid_grant")
    assert_grant_dead(smart, third, member)
    assert_token_dead(smart, second["access_token"], member)


def test_refresh_narrowing_and_broadening(smart):
    member = smart.server.member_id
    first = grant(smart)
    narrow = "launch/patient patient/*.rs offline_access"
    second = token_ok(refresh(smart, first["refresh_token"], scope=narrow))
    assert set(second["scope"].split()) == set(narrow.split()), second["scope"]
    assert "id_token" not in second, "openid was dropped"
    assert set(jwt_claims(second["access_token"])["scope"].split()) == set(narrow.split())
    assert_patient_readable(smart, second["access_token"], member)

    # Broader than granted: write access, user-level access, another client's scope.
    for broader in ("patient/*.cruds offline_access", "user/*.rs offline_access", "system/*.rs"):
        oauth_error(refresh(smart, second["refresh_token"], scope=broader), 400, "invalid_scope")
    # A refused request changed nothing: the refresh token still works.
    third = token_ok(refresh(smart, second["refresh_token"]))
    assert set(third["scope"].split()) <= FULL_SCOPES


def test_refresh_cannot_add_what_consent_left_out(smart):
    auth = new_authorization(smart)
    auth.callback = Browser(smart).authorize(auth.url, keep={"patient/*.rs", "offline_access"})
    token = exchange(smart, auth)
    assert set(token["scope"].split()) == {"launch/patient", "patient/*.rs", "offline_access"}, token["scope"]
    oauth_error(refresh(smart, token["refresh_token"], scope=FULL_SCOPE), 400, "invalid_scope")


def refresh_alone(smart: Smart, refresh_token: str, **extra) -> requests.Response:
    """A refresh as SMART's fhirclient sends it for a public app: no client authentication."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return requests.post(smart.token_endpoint, data=data, timeout=30)


def test_public_client_refreshes_without_client_id(smart):
    member = smart.server.member_id
    public = smart.public_app
    auth = authorize(smart, app=public, auth_method="none")
    first = exchange(smart, auth)
    assert first.get("refresh_token"), first

    # RFC 6749 §6: the public client's refresh token comes alone.
    second = token_ok(refresh_alone(smart, first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"], "rotation"
    assert second["patient"] == member
    assert_patient_readable(smart, second["access_token"], member)
    assert jwt_claims(second["access_token"])["client_id"] == public.client_id
    # With its own client_id it works as before.
    third = token_ok(refresh_alone(smart, second["refresh_token"], client_id=public.client_id))
    # Another public client's id is refused, and the token survives the attempt; a confidential
    # client's bare id is a failed client authentication.
    other = smart.other_public_app.client_id
    oauth_error(refresh_alone(smart, third["refresh_token"], client_id=other), 400, "invalid_grant")
    oauth_error(refresh_alone(smart, third["refresh_token"], client_id=smart.other_app.client_id), 401, "invalid_client")
    fourth = token_ok(refresh_alone(smart, third["refresh_token"]))
    oauth_error(refresh_alone(smart, generate_token(43)), 400, "invalid_grant")

    # Reuse detection is unchanged: a rotated token presented again revokes the grant.
    oauth_error(refresh_alone(smart, first["refresh_token"]), 400, "invalid_grant")
    assert_grant_dead(smart, fourth, member)


def test_confidential_client_must_authenticate_to_refresh(smart):
    token = grant(smart)
    body = oauth_error(refresh_alone(smart, token["refresh_token"]), 401, "invalid_client")
    assert "confidential" in body["error_description"], body
    oauth_error(refresh(smart, token["refresh_token"], how="none"), 401, "invalid_client")
    # Neither attempt burnt the token.
    token_ok(refresh(smart, token["refresh_token"]))


def test_refresh_by_another_client(smart):
    token = grant(smart)
    oauth_error(refresh(smart, token["refresh_token"], app=smart.other_app), 400, "invalid_grant")


# ---------------------------------------------------------------------------------------------
# Revocation (RFC 7009)


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
def test_revocation_kills_the_grant(smart, which):
    member = smart.server.member_id
    token = grant(smart)
    assert_patient_readable(smart, token["access_token"], member)
    resp = revoke(smart, token[which], token_type_hint=which)
    assert resp.status_code == 200, resp.text
    assert_grant_dead(smart, token, member)
    # Revoking again, or an unknown token, is still 200 (RFC 7009 2.2).
    assert revoke(smart, token[which]).status_code == 200
    assert revoke(smart, "no-such-token").status_code == 200


def test_revocation_needs_client_authentication(smart):
    member = smart.server.member_id
    token = grant(smart)
    resp = requests.post(smart.config["revocation_endpoint"], data={"token": token["refresh_token"]}, timeout=30)
    assert resp.status_code == 401, resp.text
    assert resp.json()["error"] == "invalid_client"
    resp = requests.post(
        smart.config["revocation_endpoint"],
        data={"token": token["refresh_token"]},
        auth=(smart.app.client_id, "wrong-secret"),
        timeout=30,
    )
    oauth_error(resp, 401, "invalid_client")
    # Another client cannot revoke this client's tokens: RFC 7009 2.1 refuses the request.
    for which in ("refresh_token", "access_token"):
        oauth_error(revoke(smart, token[which], app=smart.other_app), 400, "unauthorized_client")
    assert_patient_readable(smart, token["access_token"], member)
    assert introspect(smart, token["refresh_token"])["active"] is True


# ---------------------------------------------------------------------------------------------
# Introspection (RFC 7662)


def test_introspection_of_live_tokens(smart):
    member = smart.server.member_id
    token = grant(smart)
    now = time.time()
    access = introspect(smart, token["access_token"])
    assert access["active"] is True, access
    assert set(access["scope"].split()) == FULL_SCOPES
    assert access["client_id"] == smart.app.client_id
    assert isinstance(access["exp"], int) and now < access["exp"] <= now + 3600 + 5, access
    assert access.get("patient") == member
    assert access.get("token_type", "Bearer").lower() == "bearer"

    refresh_info = introspect(smart, token["refresh_token"], token_type_hint="refresh_token")
    assert refresh_info["active"] is True, refresh_info
    assert set(refresh_info["scope"].split()) == FULL_SCOPES
    assert refresh_info["client_id"] == smart.app.client_id
    assert isinstance(refresh_info["exp"], int) and refresh_info["exp"] > now + 3600, refresh_info

    # A bearer token may stand in for client authentication.
    resp = requests.post(
        smart.config["introspection_endpoint"],
        data={"token": token["access_token"]},
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["active"] is True


def test_introspection_of_dead_tokens(smart):
    token = grant(smart)
    assert revoke(smart, token["access_token"]).status_code == 200
    for dead in (token["access_token"], token["refresh_token"], "no-such-token", token["access_token"][:-4] + "AAAA"):
        resp = requests.post(smart.config["introspection_endpoint"], data={"token": dead}, auth=smart.app.basic, timeout=30)
        assert resp.status_code == 200
        assert resp.json() == {"active": False}, resp.text


def test_introspection_needs_authentication(smart):
    token = grant(smart)
    resp = requests.post(smart.config["introspection_endpoint"], data={"token": token["access_token"]}, timeout=30)
    assert resp.status_code == 401, resp.text
    resp = requests.post(
        smart.config["introspection_endpoint"],
        data={"token": token["access_token"]},
        auth=(smart.app.client_id, "wrong-secret"),
        timeout=30,
    )
    assert resp.status_code == 401, resp.text
    assert resp.json().get("error") == "invalid_client"


# ---------------------------------------------------------------------------------------------
# Client authentication at the token endpoint


def test_wrong_secret_with_basic(smart):
    auth = authorize(smart)
    data = {"grant_type": "authorization_code", "code": auth.code, "redirect_uri": REDIRECT_URI, "code_verifier": auth.verifier}
    resp = token_post(smart, data, how="basic", secret="wrong-secret")
    oauth_error(resp, 401, "invalid_client")
    assert resp.headers.get("WWW-Authenticate", "").startswith("Basic"), resp.headers
    assert "no-store" in resp.headers.get("Cache-Control", "")


def test_wrong_secret_with_post(smart):
    auth = authorize(smart)
    data = {"grant_type": "authorization_code", "code": auth.code, "redirect_uri": REDIRECT_URI, "code_verifier": auth.verifier}
    oauth_error(token_post(smart, data, how="post", secret="wrong-secret"), 401, "invalid_client")


def test_confidential_client_without_secret(smart):
    auth = authorize(smart)
    data = {"grant_type": "authorization_code", "code": auth.code, "redirect_uri": REDIRECT_URI, "code_verifier": auth.verifier}
    oauth_error(token_post(smart, data, how="none"), 401, "invalid_client")


def test_unknown_client(smart):
    auth = authorize(smart)
    data = {"grant_type": "authorization_code", "code": auth.code, "redirect_uri": REDIRECT_URI, "code_verifier": auth.verifier}
    resp = token_post(smart, data, app=App("no-such-client", "whatever"), how="basic")
    oauth_error(resp, 401, "invalid_client")
    assert resp.headers.get("WWW-Authenticate", "").startswith("Basic"), resp.headers


def test_failed_client_authentication_keeps_the_refresh_token(smart):
    token = grant(smart)
    resp = refresh(smart, token["refresh_token"], secret="wrong-secret")
    oauth_error(resp, 401, "invalid_client")
    # An unauthenticated request must not rotate or revoke the client's grant.
    token_ok(refresh(smart, token["refresh_token"]))


def test_two_client_authentication_methods_at_once(smart):
    # RFC 6749 2.3: a client must not use more than one authentication method per request.
    token = grant(smart)
    data = {
        "grant_type": "refresh_token",
        "refresh_token": token["refresh_token"],
        "client_id": smart.app.client_id,
        "client_secret": smart.app.client_secret,
    }
    resp = requests.post(smart.token_endpoint, data=data, auth=smart.app.basic, timeout=30)
    oauth_error(resp, 400, "invalid_request")


def test_unsupported_grant_types(smart):
    password = {"grant_type": "password", "username": "member", "password": PASSWORD}
    oauth_error(token_post(smart, password), 400, "unsupported_grant_type")
    oauth_error(token_post(smart, {"grant_type": "implicit"}), 400, "unsupported_grant_type")
    # client_credentials is for backend services (private_key_jwt), not this app.
    oauth_error(token_post(smart, {"grant_type": "client_credentials", "scope": "system/*.rs"}), 400, "unauthorized_client")
