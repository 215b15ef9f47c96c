//! The `phonekey` command: serve, migrate, createsuperuser, client.

use std::io::{BufRead, IsTerminal};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use phonekey::clock::{Clock, SystemClock};
use phonekey::config::{Config, SmsProviderKind};
use phonekey::db::{self, Conn};
use phonekey::error::AppError;
use phonekey::oauth::clients::{self, Client, GrantType, NewClient};

#[derive(Parser)]
#[command(
    name = "phonekey",
    version,
    about = "OAuth2 server with phone-number login by SMS code"
)]
struct Cli {
    /// A TOML file with settings (the environment overrides it).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database and serve HTTP.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create an administrator.
    Createsuperuser(SuperuserArgs),
    /// Register, list and delete client applications.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new signing key current (in 60 s, once every instance publishes
    /// it); the old one stays in the JWKS until its tokens have expired.
    Rotate,
    /// List the signing keys.
    List,
}

#[derive(Args)]
struct SuperuserArgs {
    #[arg(long)]
    username: String,
    #[arg(long, default_value = "")]
    email: String,
    /// Read the password from the first line of standard input instead of a prompt.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client; prints its id and (confidential clients) its secret, shown only now.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: otp, refresh_token, authorization_code, client_credentials, password.
        #[arg(long, value_delimiter = ',', required = true)]
        grant_types: Vec<String>,
        /// A public client (no secret), e.g. a mobile app.
        #[arg(long)]
        public: bool,
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Allowed scopes (repeat, or space-separated).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// An RFC 8707 resource (absolute URI) the client may ask tokens for; repeat for more.
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Print {"client_id", "client_secret"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List registered clients.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a client.
    Delete {
        /// Client ids are base64url: one in 64 begins with '-'.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("phonekey: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    match cli.command {
        Command::Serve => serve(config),
        Command::Migrate => {
            let mut conn =
                db::connect_once(&config.database).map_err(|e| format!("DATABASE_URL: {e}"))?;
            let ran = conn.db().and_then(db::migrate).map_err(|e| e.to_string())?;
            println!(
                "applied {ran} migration(s) on {}",
                config.database.backend.name()
            );
            Ok(())
        }
        Command::Createsuperuser(args) => createsuperuser(&config, args),
        Command::Client(command) => client(&config, command),
        Command::Keys(command) => keys(&config, command),
    }
}

fn connect(config: &Config) -> Result<Conn, String> {
    let mut conn = db::connect_once(&config.database).map_err(|e| format!("DATABASE_URL: {e}"))?;
    conn.db()
        .and_then(db::migrate)
        .map_err(|e| format!("DATABASE_URL: {e}"))?;
    Ok(conn)
}

fn serve(config: Config) -> Result<(), String> {
    let listen = config.listen;
    if config.sms.provider == SmsProviderKind::Console {
        tracing::warn!(
            "PHONEKEY_SMS_PROVIDER=console prints codes to standard output: for development only, not for production"
        );
    }
    if config.issuer.starts_with("http://") {
        tracing::warn!(issuer = %config.issuer, "the issuer is plain http: use https in production (PHONEKEY_ISSUER)");
    }
    let state = phonekey::prepare(config, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(listen)
        .map_err(|e| format!("PHONEKEY_LISTEN: cannot listen on {listen}: {e}"))?;
    phonekey::spawn_maintenance(&state);
    tracing::info!(%listen, issuer = %state.core.config.issuer, database = state.core.config.database.backend.name(), "phonekey serving");
    actix_web::rt::System::new()
        .block_on(async move { phonekey::serve(state, listener)?.await })
        .map_err(|e| format!("server failed: {e}"))
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
    let again = rpassword::prompt_password("Password (again): ").map_err(|e| e.to_string())?;
    if first != again {
        return Err("the passwords differ".into());
    }
    Ok(first)
}

fn createsuperuser(config: &Config, args: SuperuserArgs) -> Result<(), String> {
    let password = read_password(args.password_stdin)?;
    let mut conn = connect(config)?;
    let user = phonekey::users::create_superuser(
        &mut conn,
        &args.username,
        &args.email,
        &password,
        SystemClock.now(),
    )
    .map_err(describe)?;
    println!("superuser {} created", user.username);
    Ok(())
}

fn describe(err: AppError) -> String {
    match err {
        AppError::InvalidRequest { description, .. } => description,
        other => other.to_string(),
    }
}

fn client(config: &Config, command: ClientCommand) -> Result<(), String> {
    let mut conn = connect(config)?;
    match command {
        ClientCommand::Create {
            name,
            grant_types,
            public,
            redirect_uris,
            scopes,
            resources,
            json,
        } => {
            let grant_types = grant_types
                .iter()
                .map(|g| {
                    GrantType::parse(g.trim()).ok_or_else(|| format!("unknown grant type {g:?}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let spec = NewClient {
                name,
                confidential: !public,
                grant_types,
                redirect_uris,
                scopes,
                resources,
            };
            let (client, secret) =
                clients::create(&mut conn, &spec, SystemClock.now()).map_err(describe)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "client_id": client.id, "client_secret": secret })
                );
            } else {
                println!("client_id:     {}", client.id);
                match secret {
                    Some(s) => println!("client_secret: {s}\n(the secret is shown only now; it is stored as a hash)"),
                    None => println!("public client: no secret"),
                }
            }
            Ok(())
        }
        ClientCommand::List { json } => {
            let list: Vec<Client> = conn
                .db()
                .and_then(db::clients::list)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(Client::from)
                .collect();
            if json {
                let items: Vec<_> = list.iter().map(client_json).collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                for c in &list {
                    println!(
                        "{}  {}  {}  [{}]{}",
                        c.id,
                        if c.confidential {
                            "confidential"
                        } else {
                            "public"
                        },
                        c.name,
                        c.grant_types
                            .iter()
                            .map(|g| g.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        if c.disabled { "  (disabled)" } else { "" }
                    );
                }
            }
            Ok(())
        }
        ClientCommand::Delete { client_id } => {
            let deleted = conn.db().and_then(|c| db::clients::delete(c, &client_id));
            if deleted.map_err(|e| e.to_string())? {
                println!("client {client_id} deleted");
                Ok(())
            } else {
                Err(format!("no client {client_id}"))
            }
        }
    }
}

fn keys(config: &Config, command: KeysCommand) -> Result<(), String> {
    let mut conn = connect(config)?;
    match command {
        KeysCommand::Rotate => {
            let now = SystemClock.now();
            let kid = phonekey::oauth::keys::rotate(&mut conn, config.tokens.alg, now)
                .map_err(describe)?;
            println!(
                "new signing key {kid}: published now, signs from {}",
                chrono::DateTime::from_timestamp(now + phonekey::oauth::keys::PUBLISH_AHEAD, 0)
                    .unwrap_or_default()
            );
        }
        KeysCommand::List => {
            for k in conn
                .db()
                .and_then(db::keys::all)
                .map_err(|e| e.to_string())?
            {
                let at = |t: i64| {
                    chrono::DateTime::from_timestamp(t, 0)
                        .unwrap_or_default()
                        .to_rfc3339()
                };
                println!(
                    "{}  {}  from {}{}",
                    k.kid,
                    k.alg,
                    at(k.created_at),
                    k.retired_at
                        .map(|r| format!("  retired {}", at(r)))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn client_json(c: &Client) -> serde_json::Value {
    serde_json::json!({
        "client_id": c.id,
        "name": c.name,
        "client_type": if c.confidential { "confidential" } else { "public" },
        "grant_types": c.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "redirect_uris": c.redirect_uris,
        "scopes": c.scopes,
        "resources": c.resources,
        "disabled": c.disabled,
    })
}
