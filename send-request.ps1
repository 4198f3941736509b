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

  Shared test vector (scripts/signing-test-vector.json; the project's tests check that the values
  below match it, and -SelfTest checks this PowerShell computes the same signature):
    secret : example-secret-do-not-use-0123456789abcdef
    T      : {"prompt":"Hello, proxy! Gr<u+00FC><u+00DF>e <u+2713>","model":"gpt-4o-mini","ts":1700000000,"nonce":"3f1c9a52-7d4e-4b8a-9c0e-1a2b3c4d5e6f"}
    sign   : f1e4f5767d2b267a34aee36b62c9b12b9a281cc4030b0b8c1bc8feac7c18e478

  Exit codes: 0 completed (answer on stdout), 2 failed, 3 expired or cancelled, 4 timed out,
  5 HTTP or network error, 64 bad usage.

.EXAMPLE
  $env:PROXY_KEY = 'pk_...'; $env:PROXY_SECRET = '...'
  .\send-request.ps1 -Prompt 'What is 2+2?'

.EXAMPLE
  .\send-request.ps1 -BaseUrl https://proxy.example.com -MessagesFile .\messages.json -Model gpt-4.1 -TimeoutSeconds 600

.EXAMPLE
  .\send-request.ps1 -SelfTest
#>
[CmdletBinding(DefaultParameterSetName = 'Prompt')]
param(
    [string]$BaseUrl = $(if ($env:PROXY_BASE_URL) { $env:PROXY_BASE_URL } else { 'http://127.0.0.1:8000' }),
    [string]$ProxyKey = $env:PROXY_KEY,
    [string]$Secret = $env:PROXY_SECRET,
    [Parameter(ParameterSetName = 'Prompt', Position = 0)][string]$Prompt,
    [Parameter(ParameterSetName = 'Messages')][string]$MessagesFile,
    [string]$Model,
    [int]$Ttl = 0,
    [double]$PollSeconds = 1,
    [int]$TimeoutSeconds = 300,
    [string]$Nonce = [guid]::NewGuid().ToString(),
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
if (-not $Secret) { Stop-With 64 'no secret: set $env:PROXY_SECRET or pass -Secret' }
if (-not $Prompt -and -not $MessagesFile) { Stop-With 64 'no prompt: pass -Prompt TEXT or -MessagesFile FILE' }

# Step 1: T. Messages are spliced in as the file's own JSON text, so nothing is re-serialized.
$fields = [ordered]@{}
if ($Prompt) { $fields.prompt = $Prompt }
if ($Model) { $fields.model = $Model }
if ($Ttl -gt 0) { $fields.ttl = $Ttl }
$fields.ts = [DateTimeOffset]::UtcNow.ToUnixTimeSeconds()
$fields.nonce = $Nonce
$unsigned = $fields | ConvertTo-Json -Compress
if ($MessagesFile) {
    $raw = (Get-Content -Raw -Encoding UTF8 -LiteralPath $MessagesFile).Trim()
    $null = ConvertFrom-Json $raw  # throws on a file that is not JSON
    $unsigned = '{"messages":' + $raw + ',' + $unsigned.Substring(1)
}
$signed = Add-Signature $unsigned $Secret

# One HTTP call; answers @{ Status; Json } for any status, or exits 5 when the server cannot be reached.
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
        return @{ Status = [int]$response.StatusCode; Json = (ConvertFrom-Json $response.Content) }
    } catch {
        $failed = $_.Exception.Response
        if ($null -eq $failed) { Stop-With 5 "cannot reach ${BaseUrl}: $($_.Exception.Message)" }
        if ($_.ErrorDetails -and $_.ErrorDetails.Message) {
            $text = $_.ErrorDetails.Message                       # PowerShell 7
        } else {
            $reader = New-Object System.IO.StreamReader ($failed.GetResponseStream(), [System.Text.Encoding]::UTF8)
            $text = $reader.ReadToEnd()                           # Windows PowerShell 5.1
        }
        try { $json = ConvertFrom-Json $text } catch { $json = $null }
        return @{ Status = [int]$failed.StatusCode; Json = $json }
    }
}

function Format-Error($Json) {
    if ($Json -and $Json.PSObject.Properties['error'] -and $Json.error) { return "$($Json.error.code): $($Json.error.message)" }
    return 'no error message'
}

$created = Invoke-Proxy 'POST' '/v1/requests' $signed
if ($created.Status -ne 202 -and $created.Status -ne 200) { Stop-With 5 "create refused (HTTP $($created.Status)): $(Format-Error $created.Json)" }
$id = $created.Json.id
[Console]::Error.WriteLine("send-request: queued $id")

$deadline = (Get-Date).AddSeconds($TimeoutSeconds)
$wait = $PollSeconds
while ($true) {
    $left = ($deadline - (Get-Date)).TotalSeconds
    if ($left -le 0) { Stop-With 4 "timed out after $TimeoutSeconds s; the job $id goes on: fetch it later" }
    $long = [int][Math]::Min(30, [Math]::Ceiling($left))
    $asked = Get-Date
    $result = Invoke-Proxy 'GET' "/v1/requests/${id}?wait=$long" $null
    if ($result.Status -ne 200) { Stop-With 5 "result refused (HTTP $($result.Status)): $(Format-Error $result.Json)" }
    switch ($result.Json.status) {
        'completed' { Write-Output $result.Json.output_text; exit 0 }
        'failed' { Stop-With 2 "failed: $(Format-Error $result.Json)" }
        'expired' { Stop-With 3 'expired' }
        'cancelled' { Stop-With 3 'cancelled' }
    }
    if (((Get-Date) - $asked).TotalSeconds -lt 1) {
        Start-Sleep -Milliseconds ([int](1000 * [Math]::Min($wait, $left)))
        $wait = [Math]::Min($wait * 1.5, 10)
    }
}
