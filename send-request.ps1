<#
.SYNOPSIS
  Send one prompt to chat-async-proxy, wait for the answer, print it.

.DESCRIPTION
  Works on Windows PowerShell 5.1 and PowerShell 7. Signs the request as README.md ("Signing") says:
    1. T = the JSON body without "sign" (here: ConvertTo-Json -Compress);
    2. sign = lowercase hex HMAC-SHA256 of T's UTF-8 bytes, keyed by the secret's UTF-8 bytes;
    3. send T with its final } replaced by ,"sign":"<sign>"}   (so "sign" is the last member).
  Then long-polls the result (?wait=30: the server answers as soon as the job is final) until it is
  final or -TimeoutSeconds pass; a server that does not hold the request gets growing pauses.

  What may pass in a moment is tried again until -TimeoutSeconds pass: no answer (a restart, a
  deploy, the network) and HTTP 429, 502, 503 or 504, after the answer's Retry-After when it gives
  one. A create is signed again with a fresh ts and the same nonce, so the server stores it once.

  Shared test vector (scripts/signing-test-vector.json; the project's tests check that the values
  below match it, and -SelfTest checks this PowerShell computes the same signature):
    secret : example-secret-do-not-use-0123456789abcdef
    T      : {"prompt":"Hello, proxy! Gr<u+00FC><u+00DF>e <u+2713>","model":"gpt-4o-mini","ts":1700000000,"nonce":"3f1c9a52-7d4e-4b8a-9c0e-1a2b3c4d5e6f"}
    sign   : f1e4f5767d2b267a34aee36b62c9b12b9a281cc4030b0b8c1bc8feac7c18e478

  Exit codes: 0 completed (answer on stdout; with -Cancel, the cancel was taken; with -NoWait, the
  job was stored), 2 failed, 3 expired or cancelled, 4 timed out (the job goes on: -Id waits for it
  again), 5 HTTP or network error, 64 bad usage.

.EXAMPLE
  $env:PROXY_KEY = 'pk_...'; $env:PROXY_SECRET = '...'
  .\send-request.ps1 -Prompt 'What is 2+2?'

.EXAMPLE
  .\send-request.ps1 -BaseUrl https://proxy.example.com -MessagesFile .\messages.json -Model gpt-4.1 -TimeoutSeconds 600

.EXAMPLE
  .\send-request.ps1 -Prompt 'Summarize: ...' -System 'Answer in one line.' -Options '{"temperature":0.2,"max_tokens":500}'

.EXAMPLE
  .\send-request.ps1 -Prompt 'What is 2+2?' -AsJson
  Prints the final job as the API answers it (its usage, the upstream's whole response), not its text.

.EXAMPLE
  $id = .\send-request.ps1 -Prompt 'Summarize: ...' -NoWait
  Sends the job and prints its id (with -AsJson, the job as created), waiting for nothing; -Id waits later.

.EXAMPLE
  .\send-request.ps1 -Id req_...
  Waits again for a job sent before (exit 4 names its id); nothing is sent, so no secret is needed.

.EXAMPLE
  .\send-request.ps1 -Id req_... -Cancel
  Cancels a job sent before: a queued one at once, a running one through its worker.

.EXAMPLE
  .\send-request.ps1 -SelfTest
#>
#Requires -Version 5.1
[CmdletBinding(DefaultParameterSetName = 'Prompt')]
param(
    [string]$BaseUrl = $(if ($env:PROXY_BASE_URL) { $env:PROXY_BASE_URL } else { 'http://127.0.0.1:8000' }),
    [string]$ProxyKey = $env:PROXY_KEY,
    [string]$Secret = $env:PROXY_SECRET,
    [Parameter(ParameterSetName = 'Prompt', Position = 0)][string]$Prompt,
    [Parameter(ParameterSetName = 'Messages')][string]$MessagesFile,
    [string]$Model,
    [string]$System,
    [string]$Options,
    [int]$Ttl = 0,
    [double]$PollSeconds = 1,
    [int]$TimeoutSeconds = 300,
    [string]$Nonce = [guid]::NewGuid().ToString(),
    [switch]$AsJson,
    [Parameter(ParameterSetName = 'Prompt')][Parameter(ParameterSetName = 'Messages')][switch]$NoWait,
    [Parameter(ParameterSetName = 'Fetch', Mandatory = $true)][string]$Id,
    [Parameter(ParameterSetName = 'Fetch')][switch]$Cancel,
    [Parameter(ParameterSetName = 'SelfTest')][switch]$SelfTest
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

function Stop-With([int]$Code, [string]$Message) {
    [Console]::Error.WriteLine("send-request: $Message")
    exit $Code
}

# Step 2 of the recipe: HMAC-SHA256 over the UTF-8 bytes, lowercase hex.
function Get-Signature([string]$Text, [string]$Key) {
    $hmac = New-Object System.Security.Cryptography.HMACSHA256 (, [System.Text.Encoding]::UTF8.GetBytes($Key))
    try {
        $hash = $hmac.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($Text))
    } finally {
        $hmac.Dispose()
    }
    return (($hash | ForEach-Object { $_.ToString('x2') }) -join '')
}

# Step 3: T with its final } replaced by ,"sign":"<sign>"}.
function Add-Signature([string]$Unsigned, [string]$Key) {
    $t = $Unsigned.TrimEnd()
    if (-not $t.EndsWith('}')) { throw 'the unsigned body must be a JSON object' }
    return $t.Substring(0, $t.Length - 1) + ',"sign":"' + (Get-Signature $t $Key) + '"}'
}

if ($SelfTest) {
    # The shared vector; non-ASCII is built from code points so this file stays ASCII (5.1 reads BOM-less scripts as ANSI).
    $vectorSecret = 'example-secret-do-not-use-0123456789abcdef'
    $vectorBody = '{"prompt":"Hello, proxy! Gr' + [char]0x00FC + [char]0x00DF + 'e ' + [char]0x2713 + '","model":"gpt-4o-mini","ts":1700000000,"nonce":"3f1c9a52-7d4e-4b8a-9c0e-1a2b3c4d5e6f"}'
    $vectorSign = 'f1e4f5767d2b267a34aee36b62c9b12b9a281cc4030b0b8c1bc8feac7c18e478'
    $got = Get-Signature $vectorBody $vectorSecret
    if ($got -ne $vectorSign) { Stop-With 1 "self-test FAILED: got $got, expected $vectorSign" }
    Write-Output "self-test passed: PowerShell $($PSVersionTable.PSVersion) signs like the server"
    exit 0
}

if (-not $ProxyKey) { Stop-With 64 'no key: set $env:PROXY_KEY or pass -ProxyKey' }
if ($Id) {
    # A job sent before, waited for again (after exit 4, say): nothing is created, so nothing is
    # signed, and what only a create takes would be dropped without a word.
    if ($Id -notmatch '^[A-Za-z0-9_-]{1,128}$') { Stop-With 64 "-Id takes a request id, as req_..., not '$Id'" }
    if ($Model -or $System -or $Options -or $Ttl -gt 0 -or $PSBoundParameters.ContainsKey('Nonce')) { Stop-With 64 '-Id waits for a job sent before: it takes no -Model, -Ttl, -System, -Options or -Nonce' }
} else {
    if (-not $Secret) { Stop-With 64 'no secret: set $env:PROXY_SECRET or pass -Secret' }
    if (-not $Prompt -and -not $MessagesFile) { Stop-With 64 'no prompt: pass -Prompt TEXT or -MessagesFile FILE' }
}
# Checked here: a call that gets no answer is tried again until the timeout, and a URL that cannot
# work would only be tried again.
$parsedUrl = $null
if (-not [Uri]::TryCreate($BaseUrl, [UriKind]::Absolute, [ref]$parsedUrl) -or $parsedUrl.Scheme -notin 'http', 'https') { Stop-With 64 "-BaseUrl must be an http:// or https:// URL, not '$BaseUrl'" }

# Windows PowerShell 5.1, where .NET Framework is not told to leave the choice to the system (its
# SystemDefaultTlsVersions or SchUseStrongCrypto registry settings), offers only SSL 3 and TLS 1.0, which a
# server asking for TLS 1.2 or later refuses: "Could not create SSL/TLS secure channel". TLS 1.2 is
# added to what it offers, nothing taken away. 0 is SystemDefault (the system chooses, TLS 1.3
# included), left as it is; PowerShell 7 does not read this setting. Compared as integers: an enum
# value is true in a condition even when it is 0.
$protocols = [int][Net.ServicePointManager]::SecurityProtocol
$tls12 = [int][Net.SecurityProtocolType]::Tls12
if ($protocols -ne 0 -and ($protocols -band $tls12) -eq 0) {
    [Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]($protocols -bor $tls12)
}

$raw = $null
if ($MessagesFile) {
    # Each said in one line and exit 64, as the shell client says them, where an error record ended the
    # script with exit 1 (a missing file; an empty one, whose $null had no Trim; one not JSON).
    try { $raw = [string](Get-Content -Raw -Encoding UTF8 -LiteralPath $MessagesFile) } catch { Stop-With 64 "cannot read $MessagesFile" }
    $raw = $raw.Trim()
    try { $null = ConvertFrom-Json $raw } catch { Stop-With 64 "$MessagesFile is not JSON: $($_.Exception.Message)" }
}
# Chat-completions parameters as a JSON object, spliced in as written, as the messages are; the API
# checks each and says which it refuses (400, exit 5).
$optionsRaw = $null
if ($Options) {
    $optionsRaw = $Options.Trim()
    if (-not $optionsRaw.StartsWith('{')) { Stop-With 64 "-Options takes a JSON object, as '{""temperature"":0.2}'" }
    try { $null = ConvertFrom-Json $optionsRaw } catch { Stop-With 64 "-Options is not JSON: $($_.Exception.Message)" }
}

# Step 1: T, built for each try with the time now and the same nonce. Messages are spliced in as the
# file's own JSON text, so nothing is re-serialized.
function New-UnsignedBody {
    $fields = [ordered]@{}
    if ($Prompt) { $fields.prompt = $Prompt }
    if ($Model) { $fields.model = $Model }
    if ($System) { $fields.system = $System }
    if ($Ttl -gt 0) { $fields.ttl = $Ttl }
    $fields.ts = [DateTimeOffset]::UtcNow.ToUnixTimeSeconds()
    $fields.nonce = $Nonce
    $unsigned = $fields | ConvertTo-Json -Compress
    if ($optionsRaw) { $unsigned = '{"options":' + $optionsRaw + ',' + $unsigned.Substring(1) }
    if ($raw) { $unsigned = '{"messages":' + $raw + ',' + $unsigned.Substring(1) }
    return $unsigned
}

# One HTTP call. Answers @{ Status; Json; RetryAfter; Unreached; Unreadable } for any status; Status 0
# when no answer came (Unreached says why), RetryAfter the answer's Retry-After in seconds or $null,
# Unreadable why a 2xx's body is not JSON or $null.
function Invoke-Proxy([string]$Method, [string]$Path, [string]$Body) {
    $params = @{
        Uri             = $BaseUrl.TrimEnd('/') + $Path
        Method          = $Method
        Headers         = @{ 'X-Proxy-Key' = $ProxyKey }
        UseBasicParsing = $true
        TimeoutSec      = 75
    }
    if ($Body) {
        $params.Body = [System.Text.Encoding]::UTF8.GetBytes($Body)  # bytes: 5.1 would otherwise re-encode the string
        $params.ContentType = 'application/json'
    }
    try {
        $response = Invoke-WebRequest @params
    } catch {
        # PowerShell 7 throws an HttpRequestException, without a Response, when nothing answered
        # (read directly, strict mode would stop the script on the missing property).
        $failed = $null
        if ($_.Exception.PSObject.Properties['Response']) { $failed = $_.Exception.Response }
        if ($null -eq $failed) { return @{ Status = 0; Json = $null; RetryAfter = $null; Unreached = "cannot reach ${BaseUrl}: $($_.Exception.Message)" } }
        if ($_.ErrorDetails -and $_.ErrorDetails.Message) {
            $text = $_.ErrorDetails.Message                       # PowerShell 7
        } else {
            $reader = New-Object System.IO.StreamReader ($failed.GetResponseStream(), [System.Text.Encoding]::UTF8)
            $text = $reader.ReadToEnd()                           # Windows PowerShell 5.1
        }
        try { $json = ConvertFrom-Json $text } catch { $json = $null }
        return @{ Status = [int]$failed.StatusCode; Json = $json; RetryAfter = (Get-RetryAfter $failed); Unreached = $null }
    }
    # Read apart from the call: a 2xx that is not JSON (a web server's page at a wrong address) is an
    # answer, not "cannot reach", and is not tried again. No size limit on 5.1 either: its
    # ConvertFrom-Json sets the serializer's MaxJsonLength to Int32.MaxValue (the 2 MB limit reported
    # for ConvertFrom-Json is that of earlier versions, or of a JavaScriptSerializer made by hand).
    $json = $null; $unreadable = $null
    try { $json = ConvertFrom-Json $response.Content } catch { $unreadable = $_.Exception.Message }
    return @{ Status = [int]$response.StatusCode; Json = $json; RetryAfter = $null; Unreached = $null; Unreadable = $unreadable; Text = $response.Content }
}

# What a 2xx answer lacks: the field the proxy always sends, read under strict mode without stopping.
function Test-Field($Json, [string]$Name) { return ($null -ne $Json) -and ($null -ne $Json.PSObject.Properties[$Name]) -and ($null -ne $Json.$Name) }
# The first choice of the job's response (why it stopped, a refusal); $null when there is none.
function Get-FirstChoice($Job) {
    if (-not (Test-Field $Job 'response') -or -not (Test-Field $Job.response 'choices')) { return $null }
    $choices = @($Job.response.choices)
    if ($choices.Count -eq 0) { return $null }
    return $choices[0]
}
function Get-Unanswered($Result, [string]$What) {
    $why = if ($Result.Unreadable) { "a body that is not JSON ($($Result.Unreadable))" } else { "no $What" }
    return "the server answered $($Result.Status) with $why; is $BaseUrl the proxy's address?"
}

# Retry-After in seconds, from a 5.1 WebResponse or a PowerShell 7 HttpResponseMessage; $null if none.
function Get-RetryAfter($Response) {
    try {
        if ($Response.Headers -is [System.Net.WebHeaderCollection]) {
            $value = $Response.Headers['Retry-After']
            if ($value -match '^\s*(\d{1,5})\s*$') { return [double]$Matches[1] }
        } elseif ($Response.Headers.RetryAfter -and $Response.Headers.RetryAfter.Delta) {
            return $Response.Headers.RetryAfter.Delta.TotalSeconds
        }
    } catch { }
    return $null
}

function Format-Error($Json) {
    if ($Json -and $Json.PSObject.Properties['error'] -and $Json.error) { return "$($Json.error.code): $($Json.error.message)" }
    # An answer the proxy did not write (a web server's page at a wrong address).
    return "an answer without the proxy's JSON error; is $BaseUrl the proxy's address?"
}

# Worth another try: no answer at all, or 429, 502, 503 or 504.
function Test-Transient($Result) { return $Result.Status -in 0, 429, 502, 503, 504 }

# Sleeps before the next try: the answer's Retry-After when it gave one, else a pause growing 1.5x
# from 1 s up to 10 s; never past the deadline. $false when no time is left.
$backoff = 1.0
function Wait-BeforeRetry([string]$What, $Result) {
    $left = ($deadline - (Get-Date)).TotalSeconds
    if ($left -le 0) { return $false }
    $pause = $script:backoff
    if ($null -ne $Result.RetryAfter) { $pause = $Result.RetryAfter }
    $pause = [Math]::Min($pause, $left)
    [Console]::Error.WriteLine("send-request: $(Get-Problem $What $Result); trying again in $([Math]::Round($pause, 1))s")
    Start-Sleep -Milliseconds ([int](1000 * $pause))
    $script:backoff = [Math]::Min($script:backoff * 1.5, 10)
    return $true
}

# One line on what went wrong: why nothing answered, or the status and the answer's error.
function Get-Problem([string]$What, $Result) {
    if ($Result.Status -eq 0) { return $Result.Unreached }
    return "$What (HTTP $($Result.Status)): $(Format-Error $Result.Json)"
}

$deadline = (Get-Date).AddSeconds($TimeoutSeconds)
# With -Id nothing is created. PowerShell's names ignore case: $id is $Id, set here by the create.
while (-not $Id) {
    $unsigned = New-UnsignedBody
    $signed = Add-Signature $unsigned $Secret
    $created = Invoke-Proxy 'POST' '/v1/requests' $signed
    if ($created.Status -eq 202 -or $created.Status -eq 200) {
        if (-not (Test-Field $created.Json 'id')) { Stop-With 5 (Get-Unanswered $created 'request id') }
        $id = $created.Json.id
        [Console]::Error.WriteLine("send-request: queued $id")
        break
    }
    if (-not (Test-Transient $created)) { Stop-With 5 (Get-Problem 'create refused' $created) }
    if (-not (Wait-BeforeRetry 'create refused' $created)) { Stop-With 5 "create not accepted within $TimeoutSeconds s: $(Get-Problem 'create refused' $created)" }
}
$backoff = 1.0
# -NoWait: stored is all it waits for (the 202's promise); the id on stdout for a script to keep.
if ($NoWait) {
    if ($AsJson) { Write-Output $created.Text } else { Write-Output $id }
    exit 0
}

# -Cancel: the API's DELETE, tried again as a create is. A queued job ends at once (200); a running
# one ends when its worker, told within a second, has aborted the call (202): not waited for.
while ($Cancel) {
    $cancelled = Invoke-Proxy 'DELETE' "/v1/requests/$id" $null
    if ($cancelled.Status -eq 200 -or $cancelled.Status -eq 202) {
        if ($AsJson) { Write-Output $cancelled.Text }
        if ($cancelled.Status -eq 200) { [Console]::Error.WriteLine("send-request: cancelled $id") }
        else { [Console]::Error.WriteLine("send-request: cancel requested: $id is running; its worker aborts the call within a second") }
        exit 0
    }
    if (-not (Test-Transient $cancelled)) { Stop-With 5 (Get-Problem 'cancel refused' $cancelled) }
    if (-not (Wait-BeforeRetry 'cancel refused' $cancelled)) { Stop-With 5 "cancel not accepted within $TimeoutSeconds s: $(Get-Problem 'cancel refused' $cancelled)" }
}

$wait = $PollSeconds
while ($true) {
    $left = ($deadline - (Get-Date)).TotalSeconds
    if ($left -le 0) { Stop-With 4 "timed out after $TimeoutSeconds s; the job $id goes on: wait for it again with -Id $id, or stop it with -Id $id -Cancel" }
    $long = [int][Math]::Min(30, [Math]::Ceiling($left))
    $asked = Get-Date
    $result = Invoke-Proxy 'GET' "/v1/requests/${id}?wait=$long" $null
    if ($result.Status -ne 200) {
        if (-not (Test-Transient $result)) { Stop-With 5 (Get-Problem 'result refused' $result) }
        if (-not (Wait-BeforeRetry 'result refused' $result)) { Stop-With 4 "timed out after $TimeoutSeconds s; the job $id goes on: wait for it again with -Id $id, or stop it with -Id $id -Cancel ($(Get-Problem 'result refused' $result))" }
        continue
    }
    $backoff = 1.0
    if (-not (Test-Field $result.Json 'status')) { Stop-With 5 (Get-Unanswered $result "status for the job $id") }
    # The job whole for a program to read (its usage, the upstream's response), as the API wrote it,
    # with the exit code and stderr's line as without -AsJson.
    if ($AsJson -and $result.Json.status -in 'completed', 'failed', 'expired', 'cancelled') { Write-Output $result.Text }
    switch ($result.Json.status) {
        'completed' {
            if ($AsJson) { exit 0 }
            # An answer with no text (a tool call, a refusal, a filter, a token limit spent thinking) is said
            # so, why where the upstream says: nothing printed alone would look like a lost answer. One cut
            # at the token limit is said so too: it reads like a whole one.
            $choice = Get-FirstChoice $result.Json
            $finish = if (Test-Field $choice 'finish_reason') { [string]$choice.finish_reason } else { $null }
            if (-not (Test-Field $result.Json 'output_text') -or [string]$result.Json.output_text -eq '') {
                $note = 'the answer has no text (a tool call or a refusal?)'
                if ($finish -eq 'length') { $note = 'the answer has no text: the model reached its token limit before writing any (a reasoning model can spend it all thinking: raise max_completion_tokens in -Options)' }
                elseif ($finish -eq 'content_filter') { $note = "the answer has no text: the upstream's content filter held it back" }
                elseif ($finish -eq 'tool_calls' -or $finish -eq 'function_call') { $note = "the answer has no text: it is a tool call (finish_reason ""$finish"")" }
                # OpenAI's structured outputs answer a refusal in its own field, the content left empty.
                if ((Test-Field $choice 'message') -and (Test-Field $choice.message 'refusal') -and [string]$choice.message.refusal -ne '') {
                    $note = "the answer has no text: the model refused (""$($choice.message.refusal)"")"
                }
                [Console]::Error.WriteLine("send-request: $note; the whole job is at $($BaseUrl.TrimEnd('/'))/v1/requests/$id")
            } elseif ($finish -eq 'length') {
                [Console]::Error.WriteLine('send-request: the answer stops at the token limit (finish_reason "length"): raise max_tokens or max_completion_tokens in -Options for the rest')
            }
            Write-Output $result.Json.output_text; exit 0
        }
        'failed' { Stop-With 2 "failed: $(Format-Error $result.Json)" }
        'expired' { Stop-With 3 'expired' }
        'cancelled' { Stop-With 3 'cancelled' }
    }
    if (((Get-Date) - $asked).TotalSeconds -lt 1) {
        Start-Sleep -Milliseconds ([int](1000 * [Math]::Min($wait, $left)))
        $wait = [Math]::Min($wait * 1.5, 10)
    }
}
