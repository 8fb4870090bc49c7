//! `muster kv get|put|delete|export|import`: the key-value store through
//! `/v1/kv/<key>`, with Consul's messages and output layouts.
//!
//! Values are opaque bytes end to end: plain `kv get` writes them to stdout
//! untouched, and `put`/`import` send them untouched. Never does: locking
//! beyond the single `-acquire`/`-release` request, or transactions.

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;

use super::{align, emit, field_ci, load_data_source, parse_json, str_field, u64_field, HttpArgs};
use crate::client::{encode, Client};

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Retrieves or lists data from the KV store
    Get(GetArgs),
    /// Sets or updates data in the KV store
    Put(PutArgs),
    /// Removes data from the KV store
    Delete(DeleteArgs),
    /// Exports a tree from the KV store as JSON
    Export(ExportArgs),
    /// Imports a tree stored as JSON to the KV store
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Key, or prefix with -recurse / -keys
    pub key: Option<String>,
    /// Print every key under the prefix as key:value
    #[arg(long)]
    pub recurse: bool,
    /// List the keys under the prefix, not their values
    #[arg(long)]
    pub keys: bool,
    /// With -keys, fold keys at the first separator after the prefix
    #[arg(long, default_value = "/")]
    pub separator: String,
    /// Print all metadata of the entry, not just its value
    #[arg(long)]
    pub detailed: bool,
    /// Print values base64-encoded
    #[arg(long)]
    pub base64: bool,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct PutArgs {
    pub key: Option<String>,
    /// Value: literal, `@file` for a file's contents, `-` for stdin
    #[arg(allow_hyphen_values = true)]
    pub value: Option<String>,
    /// Opaque unsigned integer stored with the entry
    #[arg(long, default_value_t = 0)]
    pub flags: u64,
    /// Check-and-set: only write if the entry's ModifyIndex is -modify-index
    #[arg(long)]
    pub cas: bool,
    #[arg(long, default_value_t = 0)]
    pub modify_index: u64,
    /// Take the lock on the key for -session
    #[arg(long)]
    pub acquire: bool,
    /// Give up -session's lock on the key
    #[arg(long)]
    pub release: bool,
    #[arg(long)]
    pub session: Option<String>,
    /// The value is base64-encoded
    #[arg(long)]
    pub base64: bool,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub key: Option<String>,
    /// Delete every key with this prefix
    #[arg(long)]
    pub recurse: bool,
    /// Check-and-set: only delete if the entry's ModifyIndex is -modify-index
    #[arg(long)]
    pub cas: bool,
    #[arg(long, default_value_t = 0)]
    pub modify_index: u64,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Only export keys with this prefix
    pub prefix: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// JSON from `kv export`: literal, `@file`, or `-` for stdin
    #[arg(allow_hyphen_values = true)]
    pub data: Option<String>,
    /// Prefix prepended to every imported key
    #[arg(long)]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn run(command: KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Get(args) => get(args).await,
        KvCommand::Put(args) => put(args).await,
        KvCommand::Delete(args) => delete(args).await,
        KvCommand::Export(args) => export(args).await,
        KvCommand::Import(args) => import(args).await,
    }
}

fn kv_path(key: &str) -> String {
    format!("/v1/kv/{}", encode(key))
}

/// Keys never start with `/`; Consul's CLI forgives users who type one.
fn strip_leading_slash(key: Option<String>) -> String {
    let key = key.unwrap_or_default();
    key.strip_prefix('/').map(str::to_string).unwrap_or(key)
}

/// Reads a KV listing, where a 404 means "no entries".
async fn list(client: &Client, prefix: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
    match client.get_optional(&kv_path(prefix), query).await? {
        Some(resp) => parse_json(&resp.body),
        None => Ok(Value::Array(Vec::new())),
    }
}

/// The API answers writes with a bare JSON `true`/`false`.
fn answered_true(body: &[u8]) -> bool {
    body.trim_ascii() == b"true"
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let key = strip_leading_slash(args.key);
    if key.is_empty() && !(args.recurse || args.keys) {
        bail!("Error! Missing KEY argument");
    }
    let client = args.http.client()?;
    const QUERY_ERR: &str = "Error querying Consul agent";
    let out = if args.keys {
        let mut query = vec![("keys", "")];
        if !args.separator.is_empty() {
            query.push(("separator", args.separator.as_str()));
        }
        let keys = list(&client, &key, &query).await.context(QUERY_ERR)?;
        keys.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .flat_map(|k| [k, "\n"])
            .collect::<String>()
            .into_bytes()
    } else if args.recurse {
        let entries = list(&client, &key, &[("recurse", "")]).await.context(QUERY_ERR)?;
        let entries = entries.as_array().map(Vec::as_slice).unwrap_or_default();
        if args.detailed {
            entries.iter().map(|e| kv_detailed(e, args.base64)).collect::<Vec<_>>().join("\n").into_bytes()
        } else {
            kv_lines(entries, args.base64)
        }
    } else {
        let entry = match client.get_optional(&kv_path(&key), &[]).await.context(QUERY_ERR)? {
            Some(resp) => parse_json(&resp.body).context(QUERY_ERR)?,
            None => bail!("Error! No key exists at: {key}"),
        };
        let entry = entry.get(0).ok_or_else(|| anyhow!("Error! No key exists at: {key}"))?;
        if args.detailed {
            kv_detailed(entry, args.base64).into_bytes()
        } else {
            let mut value = shown_value(entry, args.base64);
            value.push(b'\n');
            value
        }
    };
    emit(&out)
}

/// An entry's value as bytes: the stored bytes, or their base64 text.
fn shown_value(entry: &Value, base64: bool) -> Vec<u8> {
    let raw = str_field(entry, "Value");
    if base64 {
        // The API already carries values base64-encoded.
        raw.as_bytes().to_vec()
    } else {
        BASE64.decode(raw).unwrap_or_else(|_| raw.as_bytes().to_vec())
    }
}

/// `-recurse` output: one `key:value` line per entry, values as raw bytes.
pub fn kv_lines(entries: &[Value], base64: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(str_field(e, "Key").as_bytes());
        out.push(b':');
        out.extend(shown_value(e, base64));
        out.push(b'\n');
    }
    out
}

/// `-detailed` output for one entry. Being a human view, a binary value is
/// shown lossily.
pub fn kv_detailed(entry: &Value, base64: bool) -> String {
    let session = match str_field(entry, "Session") {
        "" => "-",
        s => s,
    };
    let value = String::from_utf8_lossy(&shown_value(entry, base64)).into_owned();
    let rows = [
        ("CreateIndex", u64_field(entry, "CreateIndex").to_string()),
        ("Flags", u64_field(entry, "Flags").to_string()),
        ("Key", str_field(entry, "Key").to_string()),
        ("LockIndex", u64_field(entry, "LockIndex").to_string()),
        ("ModifyIndex", u64_field(entry, "ModifyIndex").to_string()),
        ("Session", session.to_string()),
        ("Value", value),
    ];
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(k, v)| vec![k.to_string(), v]).collect();
    align(&rows, 6)
}

async fn put(args: PutArgs) -> anyhow::Result<()> {
    let Some(key) = args.key else {
        bail!("Error! Missing KEY argument");
    };
    let data = match &args.value {
        Some(v) => load_data_source(v).map_err(|e| anyhow!("Error! {e:#}"))?,
        None => Vec::new(),
    };
    let data = if args.base64 {
        BASE64.decode(data.trim_ascii()).map_err(|e| anyhow!("Error! Cannot base 64 decode data: {e}"))?
    } else {
        data
    };
    let session = args.session.unwrap_or_default();
    if (args.acquire || args.release) && session.is_empty() {
        bail!("Error! Missing -session (required with -acquire and -release)");
    }
    if args.cas && args.modify_index == 0 {
        bail!("Must specify -modify-index with -cas!");
    }
    if key.starts_with('/') {
        bail!("Error! Failed writing data: Invalid key. Key must not begin with a '/': {key}");
    }
    let client = args.http.client()?;

    let flags = args.flags.to_string();
    let index = args.modify_index.to_string();
    let mut query = Vec::new();
    if args.flags != 0 {
        query.push(("flags", flags.as_str()));
    }
    // Same precedence as Consul: -cas, then -acquire, then -release. Each
    // mode has its own wording for a failed request, for the agent refusing
    // the conditional write (plain sets are never refused), and for success.
    let (request_failed, refused, success) = if args.cas {
        query.push(("cas", index.as_str()));
        (
            format!("Error! Did not write to {key}"),
            Some(format!("Error! Did not write to {key}: CAS failed")),
            format!("Success! Data written to: {key}"),
        )
    } else if args.acquire {
        query.push(("acquire", session.as_str()));
        (
            "Error! Failed writing data".to_string(),
            Some("Error! Did not acquire lock".to_string()),
            format!("Success! Lock acquired on: {key}"),
        )
    } else if args.release {
        query.push(("release", session.as_str()));
        (
            "Error! Failed writing data".to_string(),
            Some("Error! Did not release lock".to_string()),
            format!("Success! Lock released on: {key}"),
        )
    } else {
        ("Error! Failed writing data".to_string(), None, format!("Success! Data written to: {key}"))
    };
    let resp = client.put(&kv_path(&key), &query, data).await.context(request_failed)?;
    if let Some(refused) = refused {
        if !answered_true(&resp.body) {
            bail!(refused);
        }
    }
    emit(format!("{success}\n").as_bytes())
}

async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let key = strip_leading_slash(args.key);
    if key.is_empty() && !args.recurse {
        bail!("Error! Missing KEY argument");
    }
    if args.cas && args.modify_index == 0 {
        bail!("Cannot delete a key that does not exist. Provide a -modify-index greater than than 0.");
    }
    if args.modify_index != 0 && !args.cas {
        bail!("Cannot specify -modify-index without -cas!");
    }
    if args.recurse && args.cas {
        bail!("Cannot specify both -cas and -recurse!");
    }
    let client = args.http.client()?;
    let path = kv_path(&key);
    let message = if args.recurse {
        client
            .delete(&path, &[("recurse", "")])
            .await
            .with_context(|| format!("Error! Did not delete prefix {key}"))?;
        format!("Success! Deleted keys with prefix: {key}")
    } else if args.cas {
        let index = args.modify_index.to_string();
        let resp = client
            .delete(&path, &[("cas", index.as_str())])
            .await
            .with_context(|| format!("Error! Did not delete key {key}"))?;
        if !answered_true(&resp.body) {
            bail!("Error! Did not delete key {key}: CAS failed");
        }
        format!("Success! Deleted key: {key}")
    } else {
        client.delete(&path, &[]).await.with_context(|| format!("Error deleting key {key}"))?;
        format!("Success! Deleted key: {key}")
    };
    emit(format!("{message}\n").as_bytes())
}

/// One entry of the `kv export` / `kv import` interchange format.
#[derive(Serialize)]
struct ExportEntry<'a> {
    key: &'a str,
    flags: u64,
    value: &'a str,
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let prefix = strip_leading_slash(args.prefix);
    let client = args.http.client()?;
    let entries = list(&client, &prefix, &[("recurse", "")]).await.context("Error querying Consul agent")?;
    emit(export_json(entries.as_array().map(Vec::as_slice).unwrap_or_default()).as_bytes())
}

/// The export document: a tab-indented JSON array of `{key, flags, value}`
/// with values base64-encoded, as Consul writes it.
pub fn export_json(entries: &[Value]) -> String {
    let exported: Vec<ExportEntry> = entries
        .iter()
        .map(|e| ExportEntry {
            key: str_field(e, "Key"),
            flags: u64_field(e, "Flags"),
            value: str_field(e, "Value"),
        })
        .collect();
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    exported.serialize(&mut ser).expect("serializing strings and integers cannot fail");
    let mut text = String::from_utf8(out).expect("serde_json writes UTF-8");
    text.push('\n');
    text
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let data = match args.data.as_deref() {
        None => bail!("Error! Missing DATA argument"),
        Some("") => bail!("Error! Empty DATA argument"),
        Some(d) => load_data_source(d).map_err(|e| anyhow!("Error! {e:#}"))?,
    };
    let entries: Value = serde_json::from_slice(&data).map_err(|e| anyhow!("Cannot unmarshal data: {e}"))?;
    let Some(entries) = entries.as_array() else {
        bail!("Cannot unmarshal data: expected a JSON array of entries");
    };
    let client = args.http.client()?;
    let prefix = args.prefix.unwrap_or_default();
    for entry in entries {
        let key = field_ci(entry, "key").and_then(Value::as_str).unwrap_or_default();
        let key = prefixed_key(&prefix, key);
        let flags = field_ci(entry, "flags").and_then(Value::as_u64).unwrap_or(0);
        let value = field_ci(entry, "value").and_then(Value::as_str).unwrap_or_default();
        let value =
            BASE64.decode(value).map_err(|e| anyhow!("Error base 64 decoding value for key {key}: {e}"))?;
        let flags = flags.to_string();
        let query: &[(&str, &str)] = if flags == "0" { &[] } else { &[("flags", &flags)] };
        client
            .put(&kv_path(&key), query, value)
            .await
            .with_context(|| format!("Error! Failed writing data for key {key}"))?;
        emit(format!("Imported: {key}\n").as_bytes())?;
    }
    Ok(())
}

/// Re-roots an imported key under `-prefix`, with exactly one `/` between.
fn prefixed_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        return key.to_string();
    }
    format!("{}/{}", prefix.trim_end_matches('/'), key.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(key: &str, value: Option<&str>, session: Option<&str>) -> Value {
        let mut e = json!({"LockIndex": 1, "Key": key, "Flags": 42,
            "Value": value.map(|v| BASE64.encode(v)), "CreateIndex": 10, "ModifyIndex": 12});
        if let Some(s) = session {
            e["Session"] = json!(s);
        }
        e
    }

    #[test]
    fn detailed_layout() {
        assert_eq!(
            kv_detailed(&entry("foo", Some("bar"), None), false),
            "CreateIndex      10\n\
             Flags            42\n\
             Key              foo\n\
             LockIndex        1\n\
             ModifyIndex      12\n\
             Session          -\n\
             Value            bar\n"
        );
        let locked = kv_detailed(&entry("foo", Some("bar"), Some("abc-123")), true);
        assert!(locked.contains("Session          abc-123\n"), "{locked}");
        assert!(locked.ends_with("Value            YmFy\n"), "{locked}");
        // An empty value is `null` in the API and prints as nothing.
        assert!(kv_detailed(&entry("k", None, None), false).ends_with("Value\n"));
    }

    #[test]
    fn recurse_lines_keep_raw_bytes() {
        let entries = [entry("a/1", Some("x"), None), entry("a/2", None, None)];
        assert_eq!(kv_lines(&entries, false), b"a/1:x\na/2:\n");
        assert_eq!(kv_lines(&entries[..1], true), b"a/1:eA==\n");
        let binary = json!({"Key": "b", "Value": BASE64.encode([0xff, 0x00])});
        assert_eq!(kv_lines(&[binary], false), b"b:\xff\x00\n");
    }

    #[test]
    fn export_document() {
        let entries = [entry("a", Some("x"), None), entry("b/", None, None)];
        assert_eq!(
            export_json(&entries),
            "[\n\t{\n\t\t\"key\": \"a\",\n\t\t\"flags\": 42,\n\t\t\"value\": \"eA==\"\n\t},\n\
             \t{\n\t\t\"key\": \"b/\",\n\t\t\"flags\": 42,\n\t\t\"value\": \"\"\n\t}\n]\n"
        );
        assert_eq!(export_json(&[]), "[]\n");
    }

    #[test]
    fn import_prefix() {
        assert_eq!(prefixed_key("", "a/b"), "a/b");
        assert_eq!(prefixed_key("new", "a/b"), "new/a/b");
        assert_eq!(prefixed_key("new/", "/a/"), "new/a/");
    }

    #[test]
    fn write_answers() {
        assert!(answered_true(b"true"));
        assert!(answered_true(b"true\n"));
        assert!(!answered_true(b"false"));
    }
}
