//! Operations as MCP tools (2025-11-25 §Tools): name, description,
//! `inputSchema` and `outputSchema` from the registry, and results as
//! `structuredContent` plus the same JSON as text.

use std::sync::{Arc, LazyLock};

use iris_core::registry::Operation;
use iris_core::{Ctx, IrisError, now_ms, registry};
use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResult, ContentBlock, ErrorCode, JsonObject, Tool, ToolAnnotations};
use serde_json::Value;

/// Every operation as a tool, made once.
static TOOLS: LazyLock<Vec<Tool>> = LazyLock::new(|| registry().all().iter().map(tool).collect());

/// The tools `ctx`'s caller may use: the registry's [`visible_to`], as
/// `GET /api/v1/tools` lists them.
///
/// [`visible_to`]: iris_core::registry::Registry::visible_to
pub fn visible(ctx: &Ctx) -> Vec<Tool> {
    registry()
        .visible_to(&ctx.principal)
        .filter_map(|op| TOOLS.iter().find(|t| t.name == op.name))
        .cloned()
        .collect()
}

fn tool(op: &Operation) -> Tool {
    Tool::new(op.name, op.description, Arc::new(object(&op.params_schema)))
        .with_raw_output_schema(Arc::new(object(&op.result_schema)))
        .with_annotations(
            ToolAnnotations::new()
                .read_only(!op.mutating)
                .open_world(false),
        )
}

/// A schema as the JSON object MCP wants (the registry's always are),
/// in the subset MCP's SDKs take without complaint, meaning the same:
/// - boolean subschemas written as objects: schemars writes `true` for
///   "any JSON value" (`serde_json::Value` fields), which JSON Schema
///   2020-12 allows but the TypeScript SDK's tool validation refuses
///   (`properties.usage: Invalid input`); `{}` means the same;
/// - schemars' Rust number formats (`uint64`, `int32`, …) left out: they
///   are no JSON Schema format (§7.3), only annotations, and the SDKs'
///   validator (AJV) warns about each one on every listing. The ranges
///   they stand for stay as `minimum`/`maximum`.
fn object(schema: &Value) -> JsonObject {
    let mut schema = schema.clone();
    objects_only(&mut schema);
    match schema {
        Value::Object(o) => o,
        _ => JsonObject::default(),
    }
}

const RUST_NUMBER_FORMATS: &[&str] = &[
    "int", "uint", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float", "double",
];

fn objects_only(schema: &mut Value) {
    let Some(o) = schema.as_object_mut() else {
        return;
    };
    if o.get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| RUST_NUMBER_FORMATS.contains(&f))
    {
        o.remove("format");
    }
    for (keyword, value) in o.iter_mut() {
        match keyword.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" => {
                for sub in value
                    .as_object_mut()
                    .into_iter()
                    .flat_map(|m| m.values_mut())
                {
                    subschema(sub);
                }
            }
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                for sub in value.as_array_mut().into_iter().flatten() {
                    subschema(sub);
                }
            }
            "items" | "not" | "contains" | "if" | "then" | "else" => subschema(value),
            _ => {}
        }
    }
}

fn subschema(schema: &mut Value) {
    match schema {
        Value::Bool(true) => *schema = Value::Object(JsonObject::default()),
        Value::Bool(false) => *schema = serde_json::json!({"not": {}}),
        _ => objects_only(schema),
    }
}

/// A result: the operation's JSON as `structuredContent`, and as text for
/// clients that read only `content`.
pub fn success(value: Value) -> CallToolResult {
    let text = value.to_string();
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

/// A failed call, as a tool error (`isError: true`) the model can read and
/// act on: the error body of DESIGN section 6 as text (a validation
/// failure names the field in `details.fields`). No `structuredContent`:
/// it would have to match the tool's `outputSchema`.
pub fn failure(e: &IrisError, ctx: &Ctx) -> CallToolResult {
    let body = e.body(ctx.request_id(), now_ms());
    CallToolResult::error(vec![ContentBlock::text(body.to_string())])
}

/// An error of the one table as a JSON-RPC error of the protocol itself
/// (unknown tool or resource, no caller): its JSON-RPC code, the message,
/// and the error body as `data`.
pub fn protocol_error(e: &IrisError) -> McpError {
    McpError::new(
        ErrorCode(e.kind.jsonrpc_code()),
        e.message.clone(),
        Some(e.body(None, now_ms())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MCP requires both schemas to be objects with `"type": "object"` at
    /// the root (2025-11-25 §Tools, `inputSchema`/`outputSchema`).
    #[test]
    fn every_tool_has_object_schemas() {
        assert!(!TOOLS.is_empty());
        for t in TOOLS.iter() {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&Value::from("object")),
                "{} input",
                t.name
            );
            let out = t.output_schema.as_ref().expect("output schema");
            assert_eq!(
                out.get("type"),
                Some(&Value::from("object")),
                "{} output",
                t.name
            );
        }
    }

    /// docs/mcp.md's table names every tool with its scope.
    #[test]
    fn the_docs_list_every_tool() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/mcp.md"))
                .expect("docs/mcp.md");
        for op in registry().all() {
            let row = format!("| `{}` | {} |", op.name, op.scope.unwrap_or("any"));
            assert!(doc.contains(&row), "docs/mcp.md lacks {row}");
        }
    }

    #[test]
    fn boolean_subschemas_become_objects() {
        let schema = serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {"usage": true, "list": {"type": "array", "items": true},
                           "n": {"type": "integer", "format": "uint64", "minimum": 0},
                           "at": {"type": "string", "format": "date-time"},
                           "either": {"anyOf": [true, {"type": "null"}]}},
            "$defs": {"Never": false}
        });
        let o = object(&schema);
        assert_eq!(o["additionalProperties"], false);
        assert_eq!(
            o["properties"]["n"],
            serde_json::json!({"type": "integer", "minimum": 0})
        );
        assert_eq!(o["properties"]["at"]["format"], "date-time");
        assert_eq!(o["properties"]["usage"], serde_json::json!({}));
        assert_eq!(o["properties"]["list"]["items"], serde_json::json!({}));
        assert_eq!(o["properties"]["either"]["anyOf"][0], serde_json::json!({}));
        assert_eq!(o["$defs"]["Never"], serde_json::json!({"not": {}}));
    }

    #[test]
    fn tool_errors_carry_the_error_body() {
        let e = IrisError::validation("toTeam", "is required");
        let r = failure(&e, &Ctx::local());
        assert_eq!(r.is_error, Some(true));
        let text = serde_json::to_value(&r.content[0]).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_owned();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["code"], "VALIDATION_ERROR");
        assert_eq!(protocol_error(&e).code, ErrorCode(-32602));
    }
}
