#!/usr/bin/env bash
# send-request.sh: send one prompt to chat-async-proxy and print the answer. Needs bash, curl, openssl, od.
#
#   scripts/send-request.sh "What is 2+2?"
#   scripts/send-request.sh -f messages.json -m gpt-4.1 --timeout 600
#   id=$(scripts/send-request.sh --no-wait "Summarize: …")   send it now,
#   scripts/send-request.sh --id "$id"                        wait for it later (no secret needed),
#   scripts/send-request.sh --id "$id" --cancel               or cancel it
#
# Settings (flags win over environment variables):
#   -u, --base-url URL     PROXY_BASE_URL   (default http://127.0.0.1:8000)
#   -k, --key KEY          PROXY_KEY
#   -s, --secret SECRET    PROXY_SECRET     (prefer the variable: flags show in `ps`)
#   -p, --prompt TEXT      the prompt, or - to read it from standard input; it may also come as the
#                          one argument that is no option (after -- when it starts with -)
#   -f, --messages FILE    a JSON array of chat messages instead of a prompt
#   -m, --model MODEL      --ttl SECONDS    --nonce NONCE (default: a fresh UUID)
#   --system TEXT          a system message put first
#   --options JSON         chat-completions parameters, a JSON object: '{"temperature":0.2,"max_tokens":500}'
#   --poll SECONDS         first pause between polls when the server does not long-poll (default 1; grows 1.5x up to 10)
#   --timeout SECONDS      give up after this long (default 300); results are long-polled (?wait=30)
#   --id ID                wait for a job sent before (its id, as exit 4 names it) instead of sending one
#   --json                 print the final job, as the API answers it (usage, the whole response), not its text
#   --cancel               with --id: cancel that job instead of waiting for it (a running one through its worker)
#   --no-wait              send the job and print its id (with --json, the job as created), waiting for nothing
#
# What may pass in a moment is tried again until the timeout: no answer (a restart, a deploy, the
# network) and HTTP 429, 502, 503 or 504, after the answer's Retry-After when it gives one. A create
# is signed again with a fresh ts and the same nonce, so the server stores it once.
#
# Exit codes: 0 completed (answer on stdout; with --cancel, the cancel was taken; with --no-wait, the
# job was stored), 2 failed, 3 expired or cancelled, 4 timed out (the job goes on: --id waits for it
# again), 130 interrupted (Ctrl-C; the job goes on too), 5 HTTP or network error, 64 bad usage.
# Messages go to stderr.
#
# Signing (README, "Signing"): T = the JSON body without sign; sign = lowercase hex HMAC-SHA256 of
# T's UTF-8 bytes keyed by the secret; send T with its final } replaced by ,"sign":"<sign>"}.

# Run by sh (dash) it stopped at the next line with exit 2, which here means the job failed.
if [ -z "${BASH_VERSION:-}" ]; then echo 'send-request: run it with bash: bash send-request.sh, or the script itself' >&2; exit 64; fi
set -euo pipefail

base_url=${PROXY_BASE_URL:-http://127.0.0.1:8000}
key=${PROXY_KEY:-}
secret=${PROXY_SECRET:-}
prompt='' prompt_given=false job_id='' json_out=false cancel=false no_wait=false messages_file='' model='' ttl='' nonce='' system='' options='' poll=1 timeout=300

die() { printf 'send-request: %s\n' "$(printable "$2")" >&2; exit "$1"; }
# A message as a terminal may be given it: control characters (C0, DEL, C1) written out as \u001b.
# An upstream's error message reaches stderr through here, and its ESC sequences drove the terminal.
# Unicode's bidirectional controls too (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), which
# a terminal laying out right-to-left text takes as an order to reorder what follows. Matched as
# UTF-8 bytes, whatever the locale.
printable() {
  local s=$1 c h i u
  for i in {1..31} 127 {128..159}; do
    printf -v h '%02x' "$i"
    if [ "$i" -lt 128 ]; then printf -v c "\\x$h"; else printf -v c "\\xc2\\x$h"; fi
    s=${s//"$c"/\\u00$h}
  done
  for u in 061c:d8:9c 200e:e2:80:8e 200f:e2:80:8f 202a:e2:80:aa 202b:e2:80:ab 202c:e2:80:ac 202d:e2:80:ad 202e:e2:80:ae 2066:e2:81:a6 2067:e2:81:a7 2068:e2:81:a8 2069:e2:81:a9; do
    h=${u#*:}
    printf -v c "\\x${h//:/\\x}"
    s=${s//"$c"/\\u${u%%:*}}
  done
  printf '%s' "$s"
}
# An option given last without its value is bad usage (64), said so, not bash's "parameter not set".
need_value() { [ "$1" -ge 2 ] || die 64 "$2 needs a value (see --help)"; }
# Twice (-p and a bare word, or two words unquoted) would send only the last: said, not guessed.
set_prompt() {
  "$prompt_given" && die 64 "one prompt only: quote it as one argument (\"$1\" came after another)"
  prompt=$1 prompt_given=true
}

while [ $# -gt 0 ]; do
  case "$1" in
    -u|--base-url) need_value $# "$1"; base_url=$2; shift 2 ;;
    -k|--key) need_value $# "$1"; key=$2; shift 2 ;;
    -s|--secret) need_value $# "$1"; secret=$2; shift 2 ;;
    -p|--prompt) need_value $# "$1"; set_prompt "$2"; shift 2 ;;
    -f|--messages) need_value $# "$1"; messages_file=$2; shift 2 ;;
    --id) need_value $# "$1"; job_id=$2; shift 2 ;;
    --json) json_out=true; shift ;;
    --cancel) cancel=true; shift ;;
    --no-wait) no_wait=true; shift ;;
    -m|--model) need_value $# "$1"; model=$2; shift 2 ;;
    --ttl) need_value $# "$1"; ttl=$2; shift 2 ;;
    --nonce) need_value $# "$1"; nonce=$2; shift 2 ;;
    --system) need_value $# "$1"; system=$2; shift 2 ;;
    --options) need_value $# "$1"; options=$2; shift 2 ;;
    --poll) need_value $# "$1"; poll=$2; shift 2 ;;
    --timeout) need_value $# "$1"; timeout=$2; shift 2 ;;
    # The header above, to its first blank line.
    -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    # What follows -- is the prompt, even when it starts with - (a negative number, a flag's name).
    --) shift; for word in "$@"; do set_prompt "$word"; done; shift $# ;;
    # - alone is standard input, as for --prompt; any other word starting with - is a misspelt option.
    -?*) die 64 "unknown argument: $1 (see --help)" ;;
    # The prompt without -p, as the PowerShell client takes it (its first position) and as a user
    # types it first: it had been an unknown argument.
    *) set_prompt "$1"; shift ;;
  esac
done

# Without one of these it signed nothing (openssl) and sent a bad signature, or called nothing (curl)
# and said it could not reach the server.
for tool in curl openssl od; do command -v "$tool" >/dev/null 2>&1 || die 64 "needs $tool, which is not on PATH"; done
# jq, when present, reads the answers; asked once, not at each field read.
have_jq=false
command -v jq >/dev/null 2>&1 && have_jq=true
# Checked here: a call that gets no answer is tried again until the timeout, and a URL that cannot
# work would only be tried again.
[[ "$base_url" =~ ^https?://[^/] ]] || die 64 "--base-url must be an http:// or https:// URL, not '$base_url'"
# http://host:8000/ names the same API: without this its calls went to //v1/requests, a 404.
while [[ "$base_url" == */ ]]; do base_url=${base_url%/}; done
[ -n "$key" ] || die 64 'no key: set PROXY_KEY or pass --key'
if [ -n "$job_id" ]; then
  # A job sent before, waited for again (after exit 4, say): nothing is created, so nothing is
  # signed, and what only a create takes would be dropped without a word.
  [[ "$job_id" =~ ^[A-Za-z0-9_-]{1,128}$ ]] || die 64 "--id takes a request id, as req_…, not '$job_id'"
  [[ -z "$prompt$messages_file$model$ttl$system$options$nonce" ]] || die 64 '--id waits for a job sent before: it takes no prompt, --messages, --model, --ttl, --system, --options or --nonce'
  ! $no_wait || die 64 '--no-wait sends a job; with --id there is none to send'
else
  ! $cancel || die 64 '--cancel needs --id ID: the job to cancel'
  [ -n "$secret" ] || die 64 'no secret: set PROXY_SECRET or pass --secret'
fi
[ "$prompt" = '-' ] && prompt=$(cat)
if [ -n "$messages_file" ]; then
  [ -z "$prompt" ] || die 64 'give a prompt or --messages, not both'
  [ -r "$messages_file" ] || die 64 "cannot read $messages_file"
elif [ -z "$prompt$job_id" ]; then
  die 64 'no prompt: give it as the argument (- reads standard input), or pass --messages FILE'
fi
[[ "$ttl" =~ ^[0-9]*$ && "$poll" =~ ^[0-9]+(\.[0-9]+)?$ && "$timeout" =~ ^[0-9]+$ ]] || die 64 '--ttl, --poll and --timeout take numbers'
[[ -z "$options" || "$options" =~ ^[[:space:]]*\{ ]] || die 64 "--options takes a JSON object, as '{\"temperature\":0.2}'"

# JSON string escaping in pure bash: backslash, quote, and control characters. Byte by byte (the C
# locale), which UTF-8 allows (no byte of a multi-byte character is ASCII): in a UTF-8 locale each
# substitution took time growing with the square of the prompt's length (774 KB with many quotes and
# backslashes: 97 s, against 2.9 s so).
json_string() (
  LC_ALL=C
  local s=$1 c code hex escaped
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  # Other control characters become \u00XX: one substitution for each that occurs, not a loop over
  # the characters.
  if [[ "$s" =~ [[:cntrl:]] ]]; then
    for code in {1..8} 11 12 {14..31} 127; do
      printf -v hex %02x "$code"
      printf -v c "\\x$hex"
      [[ "$s" == *"$c"* ]] || continue
      printf -v escaped '\\u%04x' "$code"
      s=${s//"$c"/"$escaped"}
    done
  fi
  printf '"%s"' "$s"
)

[ -n "$nonce" ] || nonce=$(cat /proc/sys/kernel/random/uuid 2>/dev/null || openssl rand -hex 16)
# Everything but ts, which is stamped at each try.
fields='{'
if [ -n "$messages_file" ]; then
  # Without the byte-order mark a Windows editor may put first, which JSON does not allow.
  messages=$(cat "$messages_file")
  fields+="\"messages\":${messages#$'\xEF\xBB\xBF'}"
elif [ -z "$job_id" ]; then
  fields+="\"prompt\":$(json_string "$prompt")"
fi
[ -n "$model" ] && fields+=",\"model\":$(json_string "$model")"
[ -n "$ttl" ] && fields+=",\"ttl\":$ttl"
[ -n "$system" ] && fields+=",\"system\":$(json_string "$system")"
# Sent as written: the API checks each parameter and says which it refuses (400, exit 5).
[ -n "$options" ] && fields+=",\"options\":$options"

# HMAC-SHA256 (RFC 2104) of standard input keyed by the secret, in lowercase hex, made of two plain
# SHA-256 digests: `openssl dgst -hmac SECRET` would put the secret in a command line, which `ps`
# shows every user of the machine. The pads are written by printf, a bash builtin.
inner_pad='' outer_pad=''
make_pads() {
  local key_hex i byte h
  key_hex=$(printf '%s' "$secret" | od -An -v -tx1)
  key_hex=${key_hex//[$' \n']/}
  # A key longer than SHA-256's 64-byte block is replaced by its digest.
  if [ ${#key_hex} -gt 128 ]; then key_hex=$(printf '%s' "$secret" | openssl dgst -sha256 | awk '{print $NF}'); fi
  for ((i = 0; i < 64; i++)); do
    byte=${key_hex:i*2:2}
    byte=$(( 16#${byte:-00} ))
    printf -v h '\\x%02x' $(( byte ^ 0x36 )); inner_pad+=$h
    printf -v h '\\x%02x' $(( byte ^ 0x5c )); outer_pad+=$h
  done
}
hmac_sha256() {
  { printf "$outer_pad"; { printf "$inner_pad"; cat; } | openssl dgst -sha256 -binary; } | openssl dgst -sha256 | awk '{print $NF}'
}
[ -n "$job_id" ] || make_pads

signed_body() { # the body signed now: the fields, a fresh ts and the same nonce
  local body sign
  body="$fields,\"ts\":$(date +%s),\"nonce\":$(json_string "$nonce")}"
  # LC_ALL=C keeps bash from touching the bytes: the digest is of exactly what curl sends.
  sign=$(printf '%s' "$body" | LC_ALL=C hmac_sha256)
  printf '%s' "${body%\}},\"sign\":\"$sign\"}"
}

# The last answer's headers (for its Retry-After) and curl's own complaint when there was none.
headers=$(mktemp)
complaint=$(mktemp)
# The key reaches curl in a config file only this user can read (mktemp's mode, 600), not on its
# command line, which `ps` shows every user of the machine. Keys are printable ASCII; in curl's
# quoted strings a backslash and a quote are escaped.
curl_config=$(mktemp)
trap 'rm -f "$headers" "$complaint" "$curl_config"' EXIT
quoted_key=${key//\\/\\\\}
printf 'header = "X-Proxy-Key: %s"\n' "${quoted_key//\"/\\\"}" >"$curl_config"
# Prints the HTTP status on the last line after the body.
call() { : >"$headers"; curl -sS -K "$curl_config" --max-time 75 -D "$headers" -w '\n%{http_code}' "$@" 2>"$complaint"; }
header() { # the last answer's header NAME (any case), its first value, trimmed; empty when none
  awk -v name="$1" 'BEGIN { name = tolower(name) ":" }
    tolower(substr($0, 1, length(name))) == name { v = substr($0, length(name) + 1); gsub(/^[ \t]+|[ \t\r]+$/, "", v); print v; exit }' "$headers"
}
field() { # first top-level string or number field of a JSON object: field NAME
  # Nothing (not a failure, which would stop the script) for an answer that is not a JSON object.
  # -j: the value alone, no newline after it (as the branch without jq prints it), so that a caller
  # keeping the value's own trailing newlines (the answer's) gets them and no more.
  if $have_jq; then jq -j --arg f "$1" 'if type == "object" then .[$f] // empty else empty end' 2>/dev/null || true; return; fi
  # || true: grep finding none fails the pipe, which stopped the script where field is not in a $( ).
  local raw; raw=$(grep -oE "\"$1\":(\"([^\"\\\\]|\\\\.)*\"|[0-9]+)" | head -n1 | sed -E "s/^\"$1\"://") || true
  case "$raw" in
    \"*) printf '%b' "$(json_unquote "$raw")" ;;
    *) printf '%s' "$raw" ;;
  esac
}
has_text() { # whether the field output_text holds a character, as field would read it, without undoing its escapes
  if $have_jq; then jq -e 'type == "object" and ((.output_text // "") | tostring | length) > 0' >/dev/null 2>&1; return; fi
  # Where field's match begins (a quote or a digit after the name), and the character after: the
  # string's first, or its closing quote. Not the whole string, which grep took 0.41 s to match in a
  # job of a 740 KB answer, against 0.05 s so.
  local raw; raw=$(grep -oE '"output_text":("[^"]|""|[0-9])' | head -n1) || true
  [ -n "$raw" ] && [ "$raw" != '"output_text":""' ]
}
finish_reason() { # why the job's first choice stopped (stop, length, content_filter, …), from its response; empty when not said
  if $have_jq; then jq -r 'if type == "object" then (.response.choices[0].finish_reason? // empty) | strings else empty end' 2>/dev/null || true; return; fi
  # The first in the text is the first choice's: one written inside a string has its quotes escaped.
  { grep -oE '"finish_reason":"[A-Za-z_]+"' || true; } | head -n1 | sed -E 's/^"finish_reason":"([A-Za-z_]+)"$/\1/'
}
refusal_of() { # the first choice's refusal, when the model refused (OpenAI's structured outputs); empty when none
  if $have_jq; then jq -r 'if type == "object" then (.response.choices[0].message.refusal? // empty) | strings else empty end' 2>/dev/null || true; return; fi
  field refusal
}
# A JSON string's text with its quotes and \" and \/ undone, the rest left for printf %b. Byte by byte,
# as json_string: in a UTF-8 locale a long answer took bash's substitutions minutes.
json_unquote() (
  LC_ALL=C
  local raw=${1:1:${#1}-2}
  raw=${raw//\\\"/\"}
  printf '%s' "${raw//\\\//\/}"
)
error_object() { # the error object of an error envelope {"error":{...}} or a job, or the text itself when it holds none
  local e
  # The error object whole, braces inside its strings too: a message naming JSON ({"type": …}) was cut there.
  e=$(printf '%s' "$1" | grep -oE '"error":\{([^"{}]|"([^"\\]|\\.)*")*\}' | head -n1)
  e=${e#\"error\":}
  printf '%s' "${e:-$1}"
}
error_of() { # "code: message" from an error envelope {"error":{...}} or a job's error object
  local e c m
  e=$(error_object "$1")
  c=$(printf '%s' "$e" | field code); m=$(printf '%s' "$e" | field message)
  # Neither: an answer the proxy did not write (a web server's page at a wrong address).
  if [ -z "$c$m" ]; then printf 'an answer without the proxy'"'"'s JSON error; is %s the proxy'"'"'s address?' "$base_url"; return; fi
  printf '%s: %s' "${c:-error}" "${m:-no message}"
}

# Worth another try: curl could not resolve (6), connect (7), finish in time (28), got no reply (52)
# or lost the connection (55, 56); or the answer was 429, 502, 503 or 504. Sets `problem`.
transient() { # WHAT CURL_EXIT STATUS JSON
  if [ "$2" -ne 0 ]; then
    problem="cannot reach $base_url: $(sed -E 's/^curl: \([0-9]+\) //' "$complaint" | head -n1)"
    case "$2" in 6|7|28|52|55|56) return 0 ;; *) return 1 ;; esac
  fi
  problem="$1 (HTTP $3): $(error_of "$4")"
  # curl is not told to follow a redirect: a create followed as most clients follow one (as a GET,
  # without its body) would fail anyway, after the key crossed the network a second time.
  case "$3" in
    3??)
      local location; location=$(header location)
      if [ -n "$location" ]; then problem="$1 (HTTP $3): the server sends it on to $location; set PROXY_BASE_URL (or --base-url) to ${location%%/v1/requests*}"
      else problem="$1 (HTTP $3): the server sends it on without saying where; is $base_url the proxy's address?"; fi ;;
  esac
  case "$3" in 429|502|503|504) return 0 ;; *) return 1 ;; esac
}
# Sleeps before the next try: the answer's Retry-After when it gave one in seconds, else a pause
# growing 1.5x from 1 s up to 10 s; never past the deadline. Fails when no time is left.
backoff=1
pause_before_retry() {
  local left after pause
  left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 0 ] || return 1
  after=$(header retry-after)
  [[ "$after" =~ ^[0-9]{1,5}$ ]] || after=''
  pause=$(awk -v p="${after:-$backoff}" -v l="$left" 'BEGIN { print (p < l ? p : l) }')
  printf 'send-request: %s; trying again in %ss\n' "$(printable "$problem")" "$pause" >&2
  sleep "$pause"
  backoff=$(awk -v w="$backoff" 'BEGIN { w = w * 1.5; print (w > 10 ? 10 : w) }')
}

# What a job left running is, said when the wait for it ends early: by the timeout, or by Ctrl-C,
# which stops the wait, not the job, which the model may be writing (130, as a shell reports an
# interrupted program).
goes_on() { printf 'the job %s goes on: wait for it again with --id %s, or stop it with --id %s --cancel' "$id" "$id" "$id"; }
interrupted() { printf '\nsend-request: interrupted; %s\n' "$(goes_on)" >&2; exit 130; }

deadline=$(( $(date +%s) + timeout ))
id=$job_id
while [ -z "$id" ]; do
  response=$(signed_body | call -X POST -H 'Content-Type: application/json' --data-binary @- "$base_url/v1/requests") && code=0 || code=$?
  status=${response##*$'\n'}; json=${response%$'\n'*}
  if [ "$code" -eq 0 ]; then
    case "$status" in
      200|202)
        backoff=1
        id=$(printf '%s' "$json" | field id)
        [ -n "$id" ] || die 5 "the server answered $status without a request id; is $base_url the proxy's address?"
        # Before the line that names the job: a Ctrl-C that line prompts is one the trap takes.
        trap interrupted INT
        printf 'send-request: queued %s\n' "$id" >&2
        break ;;
    esac
  fi
  if ! transient 'create refused' "$code" "$status" "$json"; then
    # The prompt is escaped here; the messages file and --options go into the body as written, so a
    # body the API cannot read as JSON is theirs.
    if [ -n "$messages_file$options" ] && [ "$status" = 400 ] && [ "$(error_object "$json" | field code)" = invalid_json ]; then
      if [ -n "$messages_file" ] && [ -n "$options" ]; then problem+="; $messages_file and --options went into it as written: check that both are JSON"
      else problem+="; ${messages_file:---options} went into it as written: check that it is JSON"; fi
    fi
    die 5 "$problem"
  fi
  pause_before_retry || die 5 "create not accepted within ${timeout}s: $problem"
done
# --no-wait: stored is all it waits for (the 202's promise); the id on stdout for a script to keep.
if $no_wait; then
  if $json_out; then printf '%s\n' "$json"; else printf '%s\n' "$id"; fi
  exit 0
fi

# --cancel: the API's DELETE, tried again as a create is. A queued job ends at once (200); a running
# one ends when its worker, told within a second, has aborted the call (202): not waited for.
while $cancel; do
  response=$(call -X DELETE "$base_url/v1/requests/$id") && code=0 || code=$?
  status=${response##*$'\n'}; json=${response%$'\n'*}
  if [ "$code" -eq 0 ]; then
    case "$status" in
      200|202)
        ! $json_out || printf '%s\n' "$json"
        if [ "$status" = 200 ]; then printf 'send-request: cancelled %s\n' "$id" >&2
        else printf 'send-request: cancel requested: %s is running; its worker aborts the call within a second\n' "$id" >&2; fi
        exit 0 ;;
    esac
  fi
  transient 'cancel refused' "$code" "$status" "$json" || die 5 "$problem"
  pause_before_retry || die 5 "cancel not accepted within ${timeout}s: $problem"
done

timed_out="timed out after ${timeout}s; $(goes_on)"
trap interrupted INT
wait_s=$poll
while :; do
  left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 0 ] || die 4 "$timed_out"
  # Long-poll: the server answers as soon as the job is final, or after `wait` seconds.
  long=$(( left < 30 ? left : 30 ))
  asked=$(date +%s)
  response=$(call "$base_url/v1/requests/$id?wait=$long") && code=0 || code=$?
  status=${response##*$'\n'}; json=${response%$'\n'*}
  if [ "$code" -ne 0 ] || [ "$status" != 200 ]; then
    transient 'result refused' "$code" "$status" "$json" || die 5 "$problem"
    pause_before_retry || die 4 "$timed_out ($problem)"
    continue
  fi
  backoff=1
  job_status=$(printf '%s' "$json" | field status)
  [ -n "$job_status" ] || die 5 "the server answered 200 without a status for the job $id; is $base_url the proxy's address?"
  # The job whole for a program to read (its usage, the upstream's response), with the exit code and
  # stderr's line as without --json.
  if $json_out; then case "$job_status" in completed|failed|expired|cancelled) printf '%s\n' "$json" ;; esac; fi
  case "$job_status" in
    completed)
      $json_out && exit 0
      # The text goes from the JSON to stdout as it is, never through a variable: command
      # substitution drops a NUL (bash warns on stderr) and every trailing newline.
      finish=$(printf '%s' "$json" | finish_reason)
      # An answer with no text (a tool call, a refusal, a filter, a token limit spent thinking) is said
      # so, why where the upstream says: an empty line alone would look like a lost answer. One cut
      # at the token limit is said so too: it reads like a whole one.
      if ! printf '%s' "$json" | has_text; then
        refusal=$(printf '%s' "$json" | refusal_of)
        case "$finish" in
          length) note="the answer has no text: the model reached its token limit before writing any (a reasoning model can spend it all thinking: raise max_completion_tokens in --options)" ;;
          content_filter) note="the answer has no text: the upstream's content filter held it back" ;;
          tool_calls|function_call) note="the answer has no text: it is a tool call (finish_reason \"$finish\")" ;;
          *) note='the answer has no text (a tool call or a refusal?)' ;;
        esac
        # OpenAI's structured outputs answer a refusal in its own field, the content left empty.
        [ -z "$refusal" ] || note="the answer has no text: the model refused (\"$refusal\")"
        printf 'send-request: %s; the whole job is at %s/v1/requests/%s\n' "$(printable "$note")" "$base_url" "$id" >&2
      elif [ "$finish" = length ]; then
        printf 'send-request: the answer stops at the token limit (finish_reason "length"): raise max_tokens or max_completion_tokens in --options for the rest\n' >&2
      fi
      printf '%s' "$json" | field output_text
      printf '\n'; exit 0 ;;
    failed) die 2 "failed: $(error_of "$json")" ;;
    expired|cancelled) die 3 "$job_status" ;;
  esac
  # A server that answered at once without waiting (an older one) gets growing pauses instead.
  if [ $(( $(date +%s) - asked )) -lt 1 ]; then
    sleep "$(awk -v w="$wait_s" -v l="$left" 'BEGIN { print (w < l ? w : l) }')"
    wait_s=$(awk -v w="$wait_s" 'BEGIN { w = w * 1.5; print (w > 10 ? 10 : w) }')
  fi
done
