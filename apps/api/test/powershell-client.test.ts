/**
 * PowerShell cannot be installed on the development machines, so send-request.ps1 is checked here
 * without running it: its embedded test vector must be the shared one, its signing code must follow
 * the recipe step by step, and it must stay plain ASCII (Windows PowerShell 5.1 reads a script
 * without a byte-order mark as ANSI). On Windows, `.\send-request.ps1 -SelfTest` runs the vector.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { hmacHex } from '@proxy/core';

const root = new URL('../../../', import.meta.url);
const script = readFileSync(new URL('send-request.ps1', root), 'utf8');
const vector = JSON.parse(readFileSync(new URL('scripts/signing-test-vector.json', root), 'utf8')) as Record<string, string>;

/** Evaluates the one PowerShell string form the script uses: '...' + [char]0xNNNN + '...'. */
function psString(expression: string): string {
  return expression
    .split(/\s*\+\s*/)
    .map((part) => {
      const literal = /^'((?:[^']|'')*)'$/.exec(part);
      if (literal) return (literal[1] as string).replace(/''/g, "'");
      const char = /^\[char\]0x([0-9A-Fa-f]{4})$/.exec(part);
      if (char) return String.fromCharCode(parseInt(char[1] as string, 16));
      throw new Error(`unexpected PowerShell string part: ${part}`);
    })
    .join('');
}

function assignment(name: string): string {
  const m = new RegExp(`^\\s*\\$${name} = (.+)$`, 'm').exec(script);
  assert.ok(m, `no $${name} in send-request.ps1`);
  return psString((m[1] as string).trim());
}

test('send-request.ps1 is plain ASCII', () => {
  assert.deepEqual(
    [...script].filter((c) => c.charCodeAt(0) > 0x7e && c !== '\n'),
    [],
  );
});

test('it names the oldest PowerShell it runs on before its parameters, so an older one refuses it at once', () => {
  // Not run on PowerShell (none here). An older one, never tried, could fail with an obscure
  // error: on .NET Framework before 4.6, at [DateTimeOffset]::ToUnixTimeSeconds.
  const requires = /^#Requires -Version 5\.1$/m.exec(script);
  assert.ok(requires, '#Requires -Version 5.1');
  assert.ok(requires.index > script.indexOf('#>') && requires.index < script.indexOf('[CmdletBinding('), 'after the help block, before the parameters');
});

test('its self-test vector is the shared one, and that vector verifies', () => {
  const body = assignment('vectorBody');
  assert.equal(body, vector.unsigned_body);
  assert.equal(assignment('vectorSecret'), vector.secret);
  assert.equal(assignment('vectorSign'), vector.sign);
  assert.equal(hmacHex(assignment('vectorSecret'), Buffer.from(body, 'utf8')), vector.sign);
  assert.ok(script.includes(`sign   : ${vector.sign}`) && script.includes(`secret : ${vector.secret}`), 'the help quotes the vector');
});

test('its signing follows the recipe: HMAC-SHA256 over UTF-8 bytes, keyed by UTF-8 bytes, lowercase hex, sign appended last', () => {
  assert.match(script, /New-Object System\.Security\.Cryptography\.HMACSHA256 \(, \[System\.Text\.Encoding\]::UTF8\.GetBytes\(\$Key\)\)/);
  assert.match(script, /\$hmac\.ComputeHash\(\[System\.Text\.Encoding\]::UTF8\.GetBytes\(\$Text\)\)/);
  assert.match(script, /\$_\.ToString\('x2'\)/, 'lowercase hex');
  assert.match(script, /\$t\.Substring\(0, \$t\.Length - 1\) \+ ',"sign":"' \+ \(Get-Signature \$t \$Key\) \+ '"}'/);
  assert.match(script, /\$signed = Add-Signature \$unsigned \$Secret/);
  assert.match(script, /\$params\.Body = \[System\.Text\.Encoding\]::UTF8\.GetBytes\(\$Body\)/, 'sends the same UTF-8 bytes it signed');
});

test('its body has the contract fields, in the recipe order, and every documented parameter', () => {
  const order = [...script.matchAll(/\$fields\.(\w+) = /g)].map((m) => m[1]);
  assert.deepEqual(order, ['prompt', 'model', 'system', 'ttl', 'ts', 'nonce']);
  assert.match(script, /\$fields\.ts = \[DateTimeOffset\]::UtcNow\.ToUnixTimeSeconds\(\)/, 'ts in Unix seconds');
  assert.match(script, /\$unsigned = '\{"messages":' \+ \$raw/);
  // The options object spliced in as written, as the shell client sends --options (its end-to-end test runs it).
  assert.match(script, /\$unsigned = '\{"options":' \+ \$optionsRaw \+ ',' \+ \$unsigned\.Substring\(1\)/);
  assert.ok(script.includes('"/v1/requests/${id}?wait=$long"'), 'long-polls the result');
  for (const p of ['BaseUrl', 'ProxyKey', 'Secret', 'Prompt', 'MessagesFile', 'Model', 'System', 'Options', 'Ttl', 'PollSeconds', 'TimeoutSeconds', 'Nonce', 'Id', 'AsJson']) {
    assert.match(script, new RegExp(`\\]\\$${p}\\b`), `parameter -${p}`);
  }
  const codes = [...script.matchAll(/Stop-With (\d+) /g)].map((m) => Number(m[1]));
  assert.deepEqual(
    [...new Set(codes)].sort((a, b) => a - b),
    [1, 2, 3, 4, 5, 64],
  );
});

test('it tries again what the shell client tries again, re-signing each create with the same nonce', () => {
  // The shell client's list, which its end-to-end tests exercise, is the contract both follow.
  const shell = readFileSync(new URL('scripts/send-request.sh', root), 'utf8');
  const shellStatuses = /case "\$3" in ([0-9|]+)\) return 0/.exec(shell)?.[1]?.split('|').map(Number);
  assert.deepEqual(shellStatuses, [429, 502, 503, 504]);
  const psStatuses = /function Test-Transient\(\$Result\) \{ return \$Result\.Status -in ([0-9, ]+) \}/.exec(script)?.[1]?.split(', ').map(Number);
  assert.deepEqual(psStatuses, [0, ...(shellStatuses as number[])], 'no answer (0) and the same statuses');
  // Each try builds T again (a fresh ts) inside the create loop; the nonce is the parameter, fixed.
  const createLoop = /\n\$deadline = [^\n]+\n#[^\n]+\nwhile \(-not \$Id\) \{\n([\s\S]*?)\n\}\n/.exec(script)?.[1] ?? '';
  assert.match(createLoop, /^\s+\$unsigned = New-UnsignedBody\n\s+\$signed = Add-Signature \$unsigned \$Secret\n\s+\$created = Invoke-Proxy 'POST'/);
  assert.match(createLoop, /Test-Transient \$created[\s\S]*Wait-BeforeRetry 'create refused' \$created/);
  const body = /function New-UnsignedBody \{([\s\S]*?)\n\}/.exec(script)?.[1] ?? '';
  assert.match(body, /\$fields\.ts = \[DateTimeOffset\]::UtcNow/);
  assert.match(body, /\$fields\.nonce = \$Nonce\n/);
  // The wait for the result tries again too, and the pause honours Retry-After on either PowerShell.
  assert.match(script, /if \(-not \(Test-Transient \$result\)\) \{ Stop-With 5 [^\n]+\n\s+if \(-not \(Wait-BeforeRetry 'result refused' \$result\)\) \{ Stop-With 4 /);
  assert.match(script, /\$Response\.Headers\['Retry-After'\]/, 'Windows PowerShell 5.1');
  assert.match(script, /\$Response\.Headers\.RetryAfter\.Delta\.TotalSeconds/, 'PowerShell 7');
  assert.match(script, /if \(\$null -ne \$Result\.RetryAfter\) \{ \$pause = \$Result\.RetryAfter \}/);
  // A base URL that cannot work is refused before any call, as the shell client does (64).
  assert.match(script, /\[Uri\]::TryCreate\(\$BaseUrl, \[UriKind\]::Absolute, \[ref\]\$parsedUrl\) -or \$parsedUrl\.Scheme -notin 'http', 'https'\) \{ Stop-With 64 /);
});

test('on Windows PowerShell 5.1 it adds TLS 1.2 to the protocols offered before any call, and takes none away', () => {
  // Not run on PowerShell (none here): the statement is checked as written, and that it comes
  // before the first call.
  const adds =
    /\$protocols = \[int\]\[Net\.ServicePointManager\]::SecurityProtocol\n\$tls12 = \[int\]\[Net\.SecurityProtocolType\]::Tls12\nif \(\$protocols -ne 0 -and \(\$protocols -band \$tls12\) -eq 0\) \{\n\s+\[Net\.ServicePointManager\]::SecurityProtocol = \[Net\.SecurityProtocolType\]\(\$protocols -bor \$tls12\)\n\}/.exec(
      script,
    );
  assert.ok(adds, 'TLS 1.2 or-ed into SecurityProtocol as integers (an enum is true in a condition even at 0), SystemDefault (0) left alone');
  assert.ok(adds.index < script.indexOf('\n$deadline = '), 'before the first call');
});

test('a 2xx that is not the proxy\'s JSON stops it naming the base URL, as the shell client does, where it said "cannot reach" and tried again', () => {
  // Not run on PowerShell (none here): checked as written. ConvertFrom-Json of the answer sat in the
  // call's try, so a page that is not JSON was taken for no answer at all (Status 0, transient).
  const invoke = /function Invoke-Proxy\(([\s\S]*?)\n\}\n/.exec(script)?.[1] ?? '';
  const call = /try \{\n\s+\$response = Invoke-WebRequest @params\n\s+\} catch \{/.exec(invoke);
  assert.ok(call, 'the call alone in its try');
  assert.ok(!/try \{[^}]*ConvertFrom-Json \$response\.Content/.test(invoke.slice(0, invoke.indexOf('} catch {'))), "the parse not inside the call's try");
  assert.match(
    invoke,
    /\n\s+try \{ \$json = ConvertFrom-Json \$response\.Content \} catch \{ \$unreadable = \$_\.Exception\.Message \}\n\s+return @\{ Status = \[int\]\$response\.StatusCode; Json = \$json; RetryAfter = \$null; Unreached = \$null; Unreadable = \$unreadable; Text = \$response\.Content \}/,
  );
  assert.match(script, /\$why = if \(\$Result\.Unreadable\) \{ "a body that is not JSON \(\$\(\$Result\.Unreadable\)\)" \}/, "the parser's words in the message");
  // Both answers the client reads a field of are checked for it first, under strict mode.
  assert.match(script, /\n\s+if \(-not \(Test-Field \$created\.Json 'id'\)\) \{ Stop-With 5 \(Get-Unanswered \$created 'request id'\) \}\n\s+\$id = \$created\.Json\.id\n/);
  assert.match(
    script,
    /\n\s+if \(-not \(Test-Field \$result\.Json 'status'\)\) \{ Stop-With 5 \(Get-Unanswered \$result "status for the job \$id"\) \}\n(?:\s+#[^\n]*\n)*\s+if \(\$AsJson -and \$result\.Json\.status [^\n]+\n\s+switch \(\$result\.Json\.status\) \{/,
  );
  assert.match(script, /\$BaseUrl the proxy's address\?"/);
});

test('a completed job without text (a tool call, a refusal, a filter, a token limit spent thinking) or cut at the token limit is said so on stderr, why where the upstream says, as the shell client does', () => {
  // Not run on PowerShell (none here): checked as written; the shell client's end-to-end test runs it.
  const completed = /'completed' \{\n([\s\S]*?)\n {8}\}\n/.exec(script)?.[1] ?? '';
  assert.match(
    completed,
    /\$choice = Get-FirstChoice \$result\.Json\n\s+\$finish = if \(Test-Field \$choice 'finish_reason'\) \{ \[string\]\$choice\.finish_reason \} else \{ \$null \}\n/,
  );
  assert.match(completed, /if \(-not \(Test-Field \$result\.Json 'output_text'\) -or \[string\]\$result\.Json\.output_text -eq ''\) \{/);
  assert.match(
    completed,
    /if \(\(Test-Field \$choice 'message'\) -and \(Test-Field \$choice\.message 'refusal'\) -and \[string\]\$choice\.message\.refusal -ne ''\) \{\n\s+\$note = "the answer has no text: the model refused \(""\$\(\$choice\.message\.refusal\)""\)"\n/,
  );
  assert.match(completed, /send-request: \$note; the whole job is at \$\(\$BaseUrl\.TrimEnd\('\/'\)\)\/v1\/requests\/\$id"\)/);
  assert.match(completed, /\} elseif \(\$finish -eq 'length'\) \{\n\s+\[Console\]::Error\.WriteLine\('send-request: the answer stops at the token limit/);
  assert.match(completed, /Write-Output \$result\.Json\.output_text; exit 0$/);
  // The first choice, each step looked for first: under Set-StrictMode a property that is not there throws.
  const first = /function Get-FirstChoice\(\$Job\) \{\n([\s\S]*?)\n\}\n/.exec(script)?.[1] ?? '';
  assert.match(first, /if \(-not \(Test-Field \$Job 'response'\) -or -not \(Test-Field \$Job\.response 'choices'\)\) \{ return \$null \}/);
  assert.match(first, /if \(\$choices\.Count -eq 0\) \{ return \$null \}\n\s+return \$choices\[0\]/);
  // The same words as the shell client's (the option's name aside: -Options there is --options here).
  const shell = readFileSync(new URL('scripts/send-request.sh', root), 'utf8');
  const words = (text: string) => text.replaceAll('--options', '-Options');
  for (const [finish, note] of [
    [
      "'length'",
      'the answer has no text: the model reached its token limit before writing any (a reasoning model can spend it all thinking: raise max_completion_tokens in -Options)',
    ],
    ["'content_filter'", "the answer has no text: the upstream's content filter held it back"],
  ] as const) {
    assert.ok(completed.includes(`$finish -eq ${finish}) { $note = ${note.includes("'") ? `"${note}"` : `'${note}'`} }`), finish);
    assert.ok(words(shell).includes(note), `the same words for ${finish}`);
  }
  assert.ok(
    completed.includes(`elseif ($finish -eq 'tool_calls' -or $finish -eq 'function_call') { $note = "the answer has no text: it is a tool call (finish_reason ""$finish"")" }`),
  );
  assert.ok(shell.includes('tool_calls|function_call) note="the answer has no text: it is a tool call (finish_reason \\"$finish\\")" ;;'), 'the same words');
  assert.ok(shell.includes('note="the answer has no text: the model refused (\\"$refusal\\")"'), 'the same words');
  assert.ok(completed.includes("$note = 'the answer has no text (a tool call or a refusal?)'"));
  assert.ok(shell.includes("note='the answer has no text (a tool call or a refusal?)'"), 'the same words');
  const cut = 'the answer stops at the token limit (finish_reason "length"): raise max_tokens or max_completion_tokens in -Options for the rest';
  assert.ok(completed.includes(cut));
  assert.ok(words(shell).includes(cut), 'the same words');
});

test("-Id waits for a job sent before, as the shell client's --id does: nothing created or signed, no secret asked for, what only a create takes refused", () => {
  // Not run on PowerShell (none here): checked as written; the shell client's end-to-end test runs --id.
  assert.match(
    script,
    /\[Parameter\(ParameterSetName = 'Fetch', Mandatory = \$true\)\]\[string\]\$Id,/,
    'a parameter set of its own: -Prompt or -MessagesFile beside it is refused by PowerShell',
  );
  const checks = /\nif \(\$Id\) \{\n([\s\S]*?)\n\} else \{\n([\s\S]*?)\n\}\n/.exec(script);
  assert.ok(checks, 'the checks of -Id, and the others');
  const [, ifId, otherwise] = checks as unknown as [string, string, string];
  assert.match(ifId, /if \(\$Id -notmatch '\^\[A-Za-z0-9_-\]\{1,128\}\$'\) \{ Stop-With 64 /, 'an id that could not be a path segment is refused');
  assert.match(ifId, /if \(\$Model -or \$System -or \$Options -or \$Ttl -gt 0 -or \$PSBoundParameters\.ContainsKey\('Nonce'\)\) \{ Stop-With 64 /);
  assert.match(otherwise, /no secret/, 'the secret is asked for only when a request is sent');
  assert.ok(!ifId.includes('Secret'), 'no secret needed to wait');
  // The same pattern as the shell client's.
  const shell = readFileSync(new URL('scripts/send-request.sh', root), 'utf8');
  assert.ok(shell.includes('[[ "$job_id" =~ ^[A-Za-z0-9_-]{1,128}$ ]]'), "the shell client's check is the same");
  // The create loop runs only without an id; PowerShell's names ignore case, so the create's $id ends it.
  assert.match(script, /\nwhile \(-not \$Id\) \{\n\s+\$unsigned = New-UnsignedBody\n/);
  assert.ok(script.indexOf('while (-not $Id) {') < script.indexOf('Invoke-Proxy \'GET\' "/v1/requests/${id}?wait=$long"'), 'then the wait, for either');
  const timeouts = [...script.matchAll(/Stop-With 4 "([^"]*)/g)].map((m) => m[1]);
  assert.equal(timeouts.length, 2);
  for (const said of timeouts) assert.match(said as string, /the job \$id goes on: wait for it again with -Id \$id/);
});

test("-AsJson prints the final job as the API wrote it, as the shell client's --json does, with the same exit codes and stderr lines", () => {
  // Not run on PowerShell (none here): checked as written; the shell client's end-to-end test runs --json.
  assert.match(script, /\n {4}\[switch\]\$AsJson,\n/, 'a switch in every parameter set');
  const wait = script.slice(script.indexOf("Invoke-Proxy 'GET'"));
  const printed =
    /\n\s+if \(\$AsJson -and \$result\.Json\.status -in 'completed', 'failed', 'expired', 'cancelled'\) \{ Write-Output \$result\.Text \}\n\s+switch \(\$result\.Json\.status\) \{\n\s+'completed' \{\n\s+if \(\$AsJson\) \{ exit 0 \}\n/.exec(
      wait,
    );
  assert.ok(printed, "the answer's own text for a final job, before the switch that ends the script; a completed one ends there, 0");
  // The text is the answer's body as it came, not the object written again (5.1's ConvertTo-Json
  // escapes and cuts at depth 2).
  assert.ok(!/ConvertTo-Json[^\n]*\$result/.test(script));
  const shell = readFileSync(new URL('scripts/send-request.sh', root), 'utf8');
  assert.ok(
    shell.includes(`if $json_out; then case "$job_status" in completed|failed|expired|cancelled) printf '%s\\n' "$json" ;; esac; fi`),
    "the shell client's statuses are the same",
  );
});

test("-Id with -Cancel cancels that job, as the shell client's --id with --cancel does: the API's DELETE, tried again as a create is, not waited for", () => {
  // Not run on PowerShell (none here): checked as written; the shell client's end-to-end test runs --cancel.
  assert.match(script, /\[Parameter\(ParameterSetName = 'Fetch'\)\]\[switch\]\$Cancel,/, 'only beside -Id');
  const loop = /\nwhile \(\$Cancel\) \{\n([\s\S]*?)\n\}\n/.exec(script)?.[1] ?? '';
  assert.match(loop, /^\s+\$cancelled = Invoke-Proxy 'DELETE' "\/v1\/requests\/\$id" \$null\n/);
  assert.match(loop, /if \(\$cancelled\.Status -eq 200 -or \$cancelled\.Status -eq 202\) \{[\s\S]*?exit 0\n\s+\}/);
  assert.match(loop, /if \(\$AsJson\) \{ Write-Output \$cancelled\.Text \}/);
  assert.match(loop, /if \(-not \(Test-Transient \$cancelled\)\) \{ Stop-With 5 [^\n]+\n\s+if \(-not \(Wait-BeforeRetry 'cancel refused' \$cancelled\)\) \{ Stop-With 5 /);
  assert.ok(
    script.indexOf('while ($Cancel) {') > script.indexOf('while (-not $Id) {') && script.indexOf('while ($Cancel) {') < script.indexOf("Invoke-Proxy 'GET'"),
    'after the id is known, before the wait',
  );
  // The same words as the shell client's.
  const shell = readFileSync(new URL('scripts/send-request.sh', root), 'utf8');
  for (const words of ['send-request: cancelled ', ' is running; its worker aborts the call within a second', 'cancel not accepted within ']) {
    assert.ok(script.includes(words) && shell.includes(words), words);
  }
  const timeouts = [...script.matchAll(/Stop-With 4 "([^"]*)/g)].map((m) => m[1] as string);
  for (const said of timeouts) assert.match(said, /, or stop it with -Id \$id -Cancel/);
});

test("-NoWait sends the job and prints its id (with -AsJson, the job as created), as the shell client's --no-wait does", () => {
  // Not run on PowerShell (none here): checked as written; the shell client's end-to-end test runs --no-wait.
  assert.match(script, /\[Parameter\(ParameterSetName = 'Prompt'\)\]\[Parameter\(ParameterSetName = 'Messages'\)\]\[switch\]\$NoWait,/, 'beside a prompt or messages, not -Id');
  const block = /\n\$backoff = 1\.0\n# -NoWait[^\n]*\nif \(\$NoWait\) \{\n([\s\S]*?)\n\}\n/.exec(script)?.[1] ?? '';
  assert.match(block, /^\s+if \(\$AsJson\) \{ Write-Output \$created\.Text \} else \{ Write-Output \$id \}\n\s+exit 0$/);
  assert.ok(
    script.indexOf('if ($NoWait) {') > script.indexOf('while (-not $Id) {') && script.indexOf('if ($NoWait) {') < script.indexOf("Invoke-Proxy 'GET'"),
    'once the job is stored, before any wait',
  );
  const shell = readFileSync(new URL('scripts/send-request.sh', root), 'utf8');
  assert.ok(shell.includes(`if $json_out; then printf '%s\\n' "$json"; else printf '%s\\n' "$id"; fi`), "the shell client's output is the same");
});

test('a messages file it cannot read, or that or -Options not JSON, stops it before anything is sent, in one line and exit 64, where an error record ended the script with exit 1', () => {
  // Not run on PowerShell (none here): checked as written. The shell client cannot parse JSON without
  // jq; it says which of the two the API could not read (its end-to-end test).
  const parses = [...script.matchAll(/^\s*(.*ConvertFrom-Json \$(raw|optionsRaw)\b.*)$/gm)].map((m) => m[1] as string);
  assert.deepEqual(parses, [
    'try { $null = ConvertFrom-Json $raw } catch { Stop-With 64 "$MessagesFile is not JSON: $($_.Exception.Message)" }',
    'try { $null = ConvertFrom-Json $optionsRaw } catch { Stop-With 64 "-Options is not JSON: $($_.Exception.Message)" }',
  ]);
  // A file it cannot read, or an empty one (Get-Content -Raw gives $null, which has no Trim), in the shell client's words.
  assert.match(
    script,
    /\n\s+try \{ \$raw = \[string\]\(Get-Content -Raw -Encoding UTF8 -LiteralPath \$MessagesFile\) \} catch \{ Stop-With 64 "cannot read \$MessagesFile" \}\n\s+\$raw = \$raw\.Trim\(\)\n/,
  );
  assert.ok(readFileSync(new URL('scripts/send-request.sh', root), 'utf8').includes('die 64 "cannot read $messages_file"'));
  assert.ok(script.indexOf('ConvertFrom-Json $optionsRaw') < script.indexOf('while (-not $Id) {'), 'before the create');
});
