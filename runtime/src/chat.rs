//! Chat templates: renders a conversation into the prompt text a model was tuned on, with the Jinja
//! template the model ships (`tokenizer_config.json`, `chat_template.jinja` or GGUF metadata).
//!
//! The environment imitates the one `transformers` renders templates in, so that the same template gives
//! the same text: `trim_blocks` and `lstrip_blocks` on, loop controls, Python string and dict methods
//! (`.strip()`, `.startswith()`, `.items()`), and the globals `raise_exception` and `strftime_now`; the
//! context has `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, and `tools`/`documents`
//! set to none; `tojson` writes JSON the way Python's `json.dumps(..., ensure_ascii=False)` does, and
//! booleans and none print as `True`, `False`, `None`.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

const TEMPLATE_NAME: &str = "chat_template";

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template is not valid Jinja.
    #[error("the chat template does not compile: {message}")]
    Syntax { message: String },
    /// Rendering failed: the template raised an exception (`raise_exception`) or used a value wrongly.
    #[error("the chat template failed to render: {message}")]
    Render { message: String },
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others, such as `tool`).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
}

/// A compiled chat template with the special-token strings it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("bos_token", &self.bos_token).field("eos_token", &self.eos_token).finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token` and `eos_token` are the token strings (`<s>`, `<|im_end|>`) the
    /// template sees as `bos_token` / `eos_token`; a model without one passes an empty string.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.set_formatter(python_formatter);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| ChatTemplateError::Syntax { message: describe(&e) })?;
        Ok(Self { env, bos_token: bos_token.to_string(), eos_token: eos_token.to_string() })
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, it ends with the header that makes
    /// the model answer as the assistant.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatTemplateError> {
        let template = self.env.get_template(TEMPLATE_NAME).expect("the template was added in `new`");
        let context = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            tools => Value::from(()),
            documents => Value::from(()),
        };
        template.render(context).map_err(|e| ChatTemplateError::Render { message: describe(&e) })
    }
}

/// An error's message with the template line it happened on (and what it chained from).
fn describe(e: &Error) -> String {
    let mut message = match e.detail() {
        Some(detail) if e.kind() == ErrorKind::InvalidOperation => detail.to_string(),
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        message.push_str(&format!(" (template line {line})"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    message
}

/// Prints booleans and none as Python does (`True`, `None`); everything else as minijinja does.
fn python_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    let python = match value.kind() {
        ValueKind::Bool if value.is_true() => "True",
        ValueKind::Bool => "False",
        ValueKind::None => "None",
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(python).map_err(Error::from)
}

/// `raise_exception(message)`: templates call it to refuse a conversation they cannot format.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("the template raised an exception: {message}")))
}

/// `strftime_now(format)`: the local time in a Python `strftime` format (Llama 3.1 prints today's date).
fn strftime_now(format: String) -> Result<String, Error> {
    use std::fmt::Write;
    let items: Vec<chrono::format::Item<'_>> = chrono::format::StrftimeItems::new(&format).collect();
    if items.iter().any(|item| matches!(item, chrono::format::Item::Error)) {
        return Err(Error::new(ErrorKind::InvalidOperation, format!("strftime_now: invalid format {format:?}")));
    }
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format_with_items(items.into_iter()))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: cannot format {format:?}")))?;
    Ok(out)
}

/// `value | tojson(indent=None)`: JSON as Python's `json.dumps(value, ensure_ascii=False, indent=indent)`
/// writes it (`", "` and `": "` between items, keys in their given order; `sort_keys` is accepted).
fn tojson(value: &Value, indent: Option<usize>, kwargs: Kwargs) -> Result<String, Error> {
    let indent = match kwargs.get::<Option<usize>>("indent")? {
        Some(i) => Some(i),
        None => indent,
    };
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let formatter = PythonJsonFormatter { indent, level: 0, has_items: false };
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    let result = if sort_keys {
        // serde_json's own map type sorts its keys.
        let sorted = serde_json::to_value(value).map_err(|e| json_error(&e))?;
        sorted.serialize(&mut serializer)
    } else {
        value.serialize(&mut serializer)
    };
    result.map_err(|e| json_error(&e))?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

fn json_error(e: &serde_json::Error) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
}

/// Python `json.dumps` spacing: `, ` and `: ` on one line; with an indent, one item a line and `,` ending
/// each line but the last.
struct PythonJsonFormatter {
    indent: Option<usize>,
    level: usize,
    has_items: bool,
}

impl PythonJsonFormatter {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        if let Some(indent) = self.indent {
            w.write_all(b"\n")?;
            w.write_all(" ".repeat(indent * self.level).as_bytes())?;
        }
        Ok(())
    }

    fn begin<W: ?Sized + std::io::Write>(&mut self, w: &mut W, open: &[u8]) -> std::io::Result<()> {
        self.level += 1;
        self.has_items = false;
        w.write_all(open)
    }

    fn end<W: ?Sized + std::io::Write>(&mut self, w: &mut W, close: &[u8]) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_items {
            self.newline(w)?;
        }
        // The enclosing container (if any) has at least this item.
        self.has_items = true;
        w.write_all(close)
    }

    fn item<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(if self.indent.is_some() { b"," } else { b", " })?;
        }
        self.newline(w)
    }
}

impl serde_json::ser::Formatter for PythonJsonFormatter {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.begin(w, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.end(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_items = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.begin(w, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.end(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_items = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    const GEMMA: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"#;

    /// Llama 3.1's shape (date line, system message, header tokens), with a namespace counter, a loop
    /// `continue` and Python string methods.
    const LLAMA3: &str = r#"{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'].strip() %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- set ns = namespace(turns=0) %}
{%- for message in messages %}
    {%- if message.role not in ['user', 'assistant'] %}
        {{- raise_exception("Unknown role: " + message.role) }}
    {%- endif %}
    {%- if message.content.startswith('/skip') %}
        {%- continue %}
    {%- endif %}
    {%- set ns.turns = ns.turns + 1 %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

    #[test]
    fn smollm2_chatml_renders_the_golden_chat_prompt() {
        let golden: serde_json::Value = serde_json::from_str(&fixture("smollm2/golden.json")).unwrap();
        let chat = golden["prompts"].as_array().unwrap().iter().find(|p| p["kind"] == "chat").unwrap();
        let template =
            ChatTemplate::new(&fixture("smollm2/chat_template.jinja"), "<|im_start|>", "<|im_start|>").unwrap();
        let messages = [ChatMessage::user("What is the capital of France?")];
        assert_eq!(template.render(&messages, true).unwrap(), chat["text"].as_str().unwrap());
        // Without the generation prompt the assistant header is not there.
        let text = template.render(&messages, false).unwrap();
        assert!(text.ends_with("What is the capital of France?<|im_end|>\n"), "{text:?}");
        // A system message replaces the default one.
        let text = template.render(&[ChatMessage::new("system", "Be terse."), messages[0].clone()], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn gemma_style_template_merges_the_system_prompt_and_checks_alternation() {
        let template = ChatTemplate::new(GEMMA, "<bos>", "<eos>").unwrap();
        let messages = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::user("Hello "),
            ChatMessage::new("assistant", "Hi!"),
            ChatMessage::user("Bye"),
        ];
        assert_eq!(
            template.render(&messages, true).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi!<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(
            template.render(&[ChatMessage::user("Hello")], false).unwrap(),
            "<bos><start_of_turn>user\nHello<end_of_turn>\n"
        );
        let err = template.render(&[ChatMessage::user("a"), ChatMessage::user("b")], true).unwrap_err();
        assert!(matches!(err, ChatTemplateError::Render { .. }));
        assert!(err.to_string().contains("Conversation roles must alternate user/assistant"), "{err}");
    }

    #[test]
    fn llama3_style_template_with_date_namespace_and_loop_controls() {
        let template = ChatTemplate::new(LLAMA3, "<|begin_of_text|>", "<|eot_id|>").unwrap();
        let messages = [
            ChatMessage::new("system", "  You are terse. "),
            ChatMessage::user("/skip this"),
            ChatMessage::user("  Hi there  "),
        ];
        let expected = |date: String| {
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: {date}\n\nYou are terse.\
                 <|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            )
        };
        // The date is read while rendering; around midnight either day is right.
        let before = chrono::Local::now().format("%d %b %Y").to_string();
        let text = template.render(&messages, true).unwrap();
        let after = chrono::Local::now().format("%d %b %Y").to_string();
        assert!(text == expected(before) || text == expected(after), "{text:?}");

        let err = template.render(&[ChatMessage::new("tool", "x")], true).unwrap_err().to_string();
        assert!(err.contains("Unknown role: tool"), "{err}");
    }

    #[test]
    fn tojson_writes_python_json_and_python_methods_work() {
        let template = ChatTemplate::new(
            "{{ messages | tojson }}|{{ messages | tojson(indent=2) }}|\
             {{ {'a': [1, 2.5, none, true], 'b': {}} | tojson }}|{{ [] | tojson(indent=2) }}",
            "",
            "",
        )
        .unwrap();
        let text = template.render(&[ChatMessage::user("h\u{e9}llo \"q\"\n")], false).unwrap();
        assert_eq!(
            text,
            "[{\"role\": \"user\", \"content\": \"h\u{e9}llo \\\"q\\\"\\n\"}]|\
             [\n  {\n    \"role\": \"user\",\n    \"content\": \"h\u{e9}llo \\\"q\\\"\\n\"\n  }\n]|\
             {\"a\": [1, 2.5, null, true], \"b\": {}}|[]"
        );

        let template = ChatTemplate::new(
            "{{ '  x y  '.strip() }}|{{ 'abc'.startswith('ab') }}|{{ 'a,b'.split(',') | join('+') }}|\
             {% for k, v in {'p': 1}.items() %}{{ k }}={{ v }}{% endfor %}|\
             {% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}|\
             {{ 'Hi'.upper() }}{{ 'Hi'.lower() }}|{{ tools }}|{{ 'abc'.endswith('x') }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(template.render(&[], false).unwrap(), "x y|True|a+b|p=1|012|HIhi|None|False");
    }

    #[test]
    fn bad_templates_are_errors_with_the_line() {
        let err = ChatTemplate::new("line one\n{% for m in %}{% endfor %}", "", "").unwrap_err();
        assert!(matches!(err, ChatTemplateError::Syntax { .. }));
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = ChatTemplate::new("{{ messages[0].content.nope() }}", "", "").unwrap();
        let err = err.render(&[ChatMessage::user("x")], false).unwrap_err().to_string();
        assert!(err.contains("nope") || err.contains("unknown method"), "{err}");
        let err = ChatTemplate::new("{{ strftime_now('%Q') }}", "", "").unwrap().render(&[], false).unwrap_err();
        assert!(err.to_string().contains("strftime_now"), "{err}");
        let err = ChatTemplate::new("{{ 1 | tojson(colour=1) }}", "", "").unwrap().render(&[], false).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
