#!/usr/bin/env bash
# End-to-end test of the compose federation (deploy/compose.yaml): six real nodes in
# six containers built FROM scratch, on a private Docker network.
#
#   deploy/compose-test.sh            (as root; .ci/run runs it when Docker answers)
#
# It builds the image from the debug binary (TAMGA_BIN, default target/debug/tamga),
# generates a federation with fresh identities in a temporary directory, brings the six
# members up, and then, talking to each node's API on 127.0.0.1 with the operator
# tokens `tamga init` wrote:
#
#   1. ingests records at five members and checks that every node holds exactly the
#      records the example policies let it hold (each expectation below is worked out
#      by hand from deploy/example; nothing is asked of tamga itself), and that the
#      fields the agreements and policies withhold are absent from receivers' copies;
#   2. cuts UZ off the federation network (`docker network disconnect`), ingests at RU,
#      CN and UZ, waits until both sides have noticed (their connections closed after
#      failed pings), ingests again, checks that each side of the cut holds what it
#      should and no more, reconnects UZ at its address and checks convergence;
#   3. kills RU with SIGKILL right after its API acknowledged a batch and single
#      records, restarts it, and checks that every acknowledged record is in its store
#      and then wherever the policies send it;
#   4. stops TJ with SIGTERM (a clean exit, status 0), starts it again, checks that
#      nothing moved, and asks `tamga peers` in RU's container who is connected;
#   5. edits RU's policy on the host (KZ paused under the IPR memorandum), sends SIGHUP,
#      waits for the new policy digest, ingests, and checks KZ alone is left out; then
#      runs `tamga audit verify` in every container.
#
# Every wait is bounded, by a count and by the clock. A trap always removes the
# containers, the networks and the volumes (`compose down -v`), the image and the
# temporary directory. The last line is `compose test: N passed, M failed`; the exit status
# is 0 only when M is 0.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${TAMGA_BIN:-target/debug/tamga}
IMAGE=${TAMGA_TEST_IMAGE:-tamga:compose-test}
PROJECT=tamgacomposetest
MEMBERS=(CN KG KZ RU TJ UZ)
SUBNET=172.28.71         # gen-federation.sh's default: CN .11 … UZ .16
FIRST_PORT=17181         # gen-federation.sh's default: CN's API, … UZ 17186
CONVERGE_SECS=90         # the longest wait for the federation to settle
START_SECS=60            # the longest wait for a node's API to answer

export LC_ALL=C
started=$SECONDS
passed=0
failed=0
note() { printf '%s\n' "$*"; }
pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); printf 'FAIL: %s\n' "$*"; }
# A failure that ends the test (also from inside $(…): the message goes to stderr, and
# the non-zero status ends the main shell through set -e; the EXIT trap then counts it).
die() {
  printf 'FAIL: %s\n' "$*" >&2
  exit 1
}

work=
fed=
image_built=0
compose() { "${COMPOSE[@]}" --env-file "$fed/compose.env" -f deploy/compose.yaml -p "$PROJECT" "$@"; }
# Always: tear down (containers, networks, volumes), remove the files, print the summary.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ "$rc" -eq 0 ] || [ "$failed" -ne 0 ] || failed=1   # ended by die or an unexpected error
  if [ -n "$fed" ] && [ -f "$fed/compose.env" ]; then
    if [ "$failed" -ne 0 ]; then
      note "--- last log lines of each node"
      compose logs --no-color --tail 20 2>&1 || true
    fi
    note "=== down"
    compose down -v --remove-orphans >/dev/null 2>&1 || note "warning: compose down -v failed"
  fi
  [ -z "$work" ] || rm -rf "$work"
  # The image is rebuilt from the binary at every run: do not leave one behind.
  [ "$image_built" -eq 0 ] || docker image rm "$IMAGE" >/dev/null 2>&1 || true
  note "took $((SECONDS - started))s"
  printf 'compose test: %d passed, %d failed\n' "$passed" "$failed"
  [ "$failed" -eq 0 ] || exit 1
  exit 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- preconditions --------------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || die "run as root: the generated key files are handed to the image's uid 10001"
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info)"
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  die "neither 'docker compose' nor 'docker-compose' is installed"
fi
for tool in curl python3; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
[ -x "$BIN" ] || die "$BIN not found: cargo build -p tamga-node"
for i in "${!MEMBERS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$((FIRST_PORT + i))") 2>/dev/null; then
    die "127.0.0.1:$((FIRST_PORT + i)) is in use: is a compose federation already up? (compose … -p tamga down)"
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/tamga-compose-test.XXXXXX")
fed=$work/federation

# ---- build, generate, start -----------------------------------------------------------

note "=== image"
image_built=1
deploy/build-image.sh "$BIN" "$IMAGE"

note "=== federation"
deploy/gen-federation.sh --tamga "$BIN" --image "$IMAGE" "$fed"

declare -A PORT TOKEN
for i in "${!MEMBERS[@]}"; do
  m=${MEMBERS[$i]}
  PORT[$m]=$((FIRST_PORT + i))
  TOKEN[$m]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["operator"])' "$fed/$m/tokens.json")
done

note "=== up"
compose up -d

cid() { compose ps -q "${1,,}"; }
NET=${PROJECT}_federation
docker network inspect "$NET" >/dev/null || die "network $NET not found"

# GET a path of a member's API; prints the body; fails unless 200.
get() {
  curl -sS --fail --max-time 10 -H "Authorization: Bearer ${TOKEN[$1]}" "http://127.0.0.1:${PORT[$1]}$2"
}

# The value at a dotted path of the JSON on stdin.
jget() {
  python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v if not isinstance(v, (dict, list)) else json.dumps(v))' "$1"
}

wait_api() {
  local m=$1 i t0=$SECONDS
  for ((i = 0; i < START_SECS * 2 && SECONDS - t0 < START_SECS; i++)); do
    get "$m" /v1/status >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "$m's API did not answer within ${START_SECS}s"
}

# wait_peers MEMBER N SECS: wait until MEMBER sees N members connected; false if not
# within SECS. Leaves the last count seen in $n_peers.
n_peers=
wait_peers() {
  local m=$1 want=$2 secs=$3 i t0=$SECONDS
  for ((i = 0; i < secs * 2 && SECONDS - t0 < secs; i++)); do
    n_peers=$(get "$m" /v1/status 2>/dev/null | jget peers_connected 2>/dev/null || true)
    [ "$n_peers" = "$want" ] && return 0
    sleep 0.5
  done
  return 1
}

# Wait until a member sees the five other running members connected.
wait_connected() {
  wait_peers "$1" 5 "$START_SECS" || die "$1 has ${n_peers:-?} peers connected after ${START_SECS}s, not 5"
}

for m in "${MEMBERS[@]}"; do wait_api "$m"; done
for m in "${MEMBERS[@]}"; do wait_connected "$m"; done
note "six nodes up and connected after $((SECONDS - started))s"

# ---- ingest and expectations ----------------------------------------------------------

declare -A FINAL NOW LABEL   # record id -> members that must end up holding it / hold it now; label
IDS=()

# POST a record or a batch to a member's API; prints the acknowledged ids, one a line.
post() {
  local m=$1 body=$2 out code
  out=$(curl -sS --max-time 30 -H "Authorization: Bearer ${TOKEN[$m]}" -H 'Content-Type: application/json' \
    --data-binary "$body" -w '\n%{http_code}' "http://127.0.0.1:${PORT[$m]}/v1/records") ||
    die "POST /v1/records at $m failed"
  code=${out##*$'\n'}
  out=${out%$'\n'*}
  [ "$code" = 200 ] || die "POST /v1/records at $m answered $code: $out"
  python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)["ids"]))' <<<"$out"
}

# ingest MEMBER LABEL "HOLDERS" JSON: ingest one record at MEMBER; it must end up held
# by exactly HOLDERS (the origin included). Sets $ID.
ingest() {
  local m=$1 label=$2 holders=$3 body=$4
  ID=$(post "$m" "$body")
  [ -n "$ID" ] || die "no id acknowledged for $label"
  IDS+=("$ID")
  FINAL[$ID]=$holders
  NOW[$ID]=$holders
  LABEL[$ID]="$m $label"
}

has() { [[ " $1 " == *" $2 "* ]]; }

# What each member holds now: HELD[member] = " id id … " (sorted), or " ? " when its
# API did not answer. One python3 for the six GETs: it is polled every half second.
declare -A HELD
snapshot() {
  local m ids
  for m in "${MEMBERS[@]}"; do HELD[$m]=" ? "; done
  while read -r m ids; do
    HELD[$m]=" $ids "
  done < <(
    for m in "${MEMBERS[@]}"; do echo "$m ${PORT[$m]} ${TOKEN[$m]}"; done | python3 -c '
import json, sys, urllib.request
for line in sys.stdin:
    member, port, token = line.split()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/records?limit=10000",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            ids = sorted(rec["id"] for rec in json.load(r)["records"])
        print(member, " ".join(ids))
    except Exception:
        print(member, "?")'
  )
}

# Whether every member holds exactly what NOW says.
settled() {
  local m id want sorted
  sorted=$(printf '%s\n' "${IDS[@]}" | sort)
  for m in "${MEMBERS[@]}"; do
    want=" "
    for id in $sorted; do
      has "${NOW[$id]}" "$m" && want+="$id "
    done
    [ "${HELD[$m]}" = "$want" ] || return 1
  done
}

# converge WHAT: wait (bounded) until every member holds exactly what NOW says, then
# count one check per record and member, and one per member for "nothing else".
converge() {
  local what=$1 i id m t0=$SECONDS
  for ((i = 0; i < CONVERGE_SECS * 2 && SECONDS - t0 < CONVERGE_SECS; i++)); do
    snapshot
    settled && break
    sleep 0.5
  done
  for id in "${IDS[@]}"; do
    for m in "${MEMBERS[@]}"; do
      if has "${NOW[$id]}" "$m"; then
        if has "${HELD[$m]}" "$id"; then pass; else fail "$what: $m lacks ${LABEL[$id]} ${id:0:12}… (expected at: ${NOW[$id]})"; fi
      else
        if has "${HELD[$m]}" "$id"; then fail "$what: $m holds ${LABEL[$id]} ${id:0:12}… (expected only at: ${NOW[$id]})"; else pass; fi
      fi
    done
  done
  for m in "${MEMBERS[@]}"; do
    local extra=0
    for id in ${HELD[$m]}; do
      [ "$id" = "?" ] && { fail "$what: $m's API did not answer"; extra=-1; break; }
      [ -n "${NOW[$id]+x}" ] || { fail "$what: $m holds a record nobody ingested: $id"; extra=1; }
    done
    [ "$extra" -eq 0 ] && pass
  done
  note "$what: settled after $((SECONDS - t0))s (${#IDS[@]} records × ${#MEMBERS[@]} nodes)"
}

# field_absent MEMBER ID FIELD: MEMBER's copy of ID has no FIELD in its body.
field_absent() {
  local m=$1 id=$2 field=$3 body
  body=$(get "$m" "/v1/records/$id" | jget record.body) || { fail "$m: cannot read ${LABEL[$id]}"; return; }
  if python3 -c 'import json, sys; sys.exit(sys.argv[2] in json.loads(sys.argv[1]))' "$body" "$field"; then
    pass
  else
    fail "$m's copy of ${LABEL[$id]} carries $field, which must be withheld"
  fi
}

# field_present MEMBER ID FIELD: the origin kept FIELD (the redaction happens on the wire).
field_present() {
  local m=$1 id=$2 field=$3 body
  body=$(get "$m" "/v1/records/$id" | jget record.body) || { fail "$m: cannot read ${LABEL[$id]}"; return; }
  if python3 -c 'import json, sys; sys.exit(sys.argv[2] not in json.loads(sys.argv[1]))' "$body" "$field"; then
    pass
  else
    fail "$m's own ${LABEL[$id]} lost $field"
  fi
}

ALL="CN KG KZ RU TJ UZ"
TODAY=$(date -u +%Y-%m-%d)
NOWTS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
alert() { printf '{"category":"enforcement.alert","classification":"non_confidential","body":{"alert_kind":"smuggling","summary":"%s","detected_at":"%s","customs_office":"%s","suspect_name":"A. Person","suspect_document":"AB1234567"}}' "$1" "$NOWTS" "$2"; }
infringement() { printf '{"category":"ipr.infringement","classification":"public","body":{"detained_on":"%s","customs_office":"%s","mark_name":"%s","goods_description":"counterfeit footwear","quantity":%d,"unit":"pairs","estimated_value_usd":"1200.50","declarant_name":"Declarant LLC","driver_name":"B. Driver"}}' "$TODAY" "$1" "$2" "$3"; }
energy() { printf '{"category":"energy.transfer","classification":"%s","body":{"period_start":"2026-10-01","period_end":"2026-10-31","crossing_point":"%s","direction":"export","energy_type":"%s","volume":"%s","unit":"mwh","reported_at":"%s","contract_reference":"C-2026-17","contract_price":"41.5"}}' "$1" "$2" "$3" "$4" "$NOWTS"; }
method() { printf '{"category":"rms.method","classification":"%s","body":{"title":"%s","method_type":"selectivity","summary":"Routes are scored.","author_name":"C. Author"}}' "$1" "$2"; }

# ---- 1. who holds what ----------------------------------------------------------------
# Expectations, read off deploy/example (agreements/*.toml and policies/XX.toml):

note "=== 1. sharing by the example policies"
# ru-kz-enforcement: parties KZ, RU; RU shares to KZ; KZ accepts from RU.
ingest RU "enforcement.alert" "RU KZ" "$(alert 'Undeclared cigarettes in a timber load' Troitsk)"
ru_alert=$ID
# sco-ipr-2012: RU shares to every party, every member accepts; `personal` withheld.
ingest RU "ipr.infringement public" "$ALL" "$(infringement Brest Adidas 120)"
ru_ipr=$ID
# Confidential: never leaves the node (invariant 2), whatever the policy.
ingest RU "rms.method confidential" "RU" "$(method confidential 'Risk profile: timber route')"
# sco-energy-2008: RU shares to every party except TJ (paused).
ingest RU "energy.transfer non_confidential" "RU CN KG KZ UZ" "$(energy non_confidential Blagoveshchensk electricity 1000)"
# RU shares rms.method only when public.
ingest RU "rms.method non_confidential" "RU" "$(method non_confidential 'Post-clearance audit sampling')"
# sco-rms-2013: CN shares rms.* to every party; every member accepts (XS runs no node).
ingest CN "rms.event public" "$ALL" '{"category":"rms.event","classification":"public","body":{"title":"Seminar on risk management","event_kind":"seminar","starts_on":"2026-12-01","location":"Beijing","host":"CN","organiser_contact":"D. Organiser"}}'
# KG shares energy to CN, KZ, TJ, UZ only (not RU).
ingest KG "energy.transfer public" "KG CN KZ TJ UZ" "$(energy public Osh electricity 250)"
# KZ shares alerts to RU without suspect_document.
ingest KZ "enforcement.alert" "KZ RU" "$(alert 'Misdeclared textiles' Petropavl)"
kz_alert=$ID
# TJ shares only ipr.infringement (not the register), with estimated_value_usd withheld.
ingest TJ "ipr.protected_mark public" "TJ" '{"category":"ipr.protected_mark","classification":"public","body":{"register_number":"TJ-0042","mark_name":"Pamir","mark_kind":"word","protected_from":"2020-01-01","status":"active","right_holder_name":"Pamir LLC"}}'
ingest TJ "ipr.infringement public" "$ALL" "$(infringement Dushanbe Puma 40)"
tj_ipr=$ID
# UZ shares energy only at non_confidential.
ingest UZ "energy.transfer public" "UZ" "$(energy public Navoi natural_gas 300)"
# KG shares only rms.event under the RMS memorandum.
ingest KG "rms.method public" "KG" "$(method public 'Data analysis of manifests')"

converge "1. sharing"
field_present RU "$ru_ipr" declarant_name
for m in KZ UZ; do
  field_absent "$m" "$ru_ipr" declarant_name
  field_absent "$m" "$ru_ipr" driver_name
  field_absent "$m" "$tj_ipr" estimated_value_usd
done
field_absent RU "$kz_alert" suspect_document
field_present KZ "$ru_alert" suspect_document   # no redaction in RU's policy or the agreement

# ---- 2. partition ---------------------------------------------------------------------

note "=== 2. UZ cut off the federation network"
uz=$(cid UZ)
docker network disconnect "$NET" "$uz"
# While cut off, a record stays on its origin's side of the cut.
side_of() { if [ "$1" = UZ ]; then echo UZ; else echo "CN KG KZ RU TJ"; fi; }
ingest_cut() {
  local origin=$1 label=$2 holders=$3 body=$4 m now=""
  ingest "$origin" "$label" "$holders" "$body"
  for m in $holders; do has "$(side_of "$origin")" "$m" && now+="$m "; done
  NOW[$ID]=${now% }
}
ingest_cut RU "ipr.infringement public (cut)" "$ALL" "$(infringement Zabaikalsk Nike 300)"
ingest_cut RU "energy.transfer non_confidential (cut)" "RU CN KG KZ UZ" "$(energy non_confidential Kurgan crude_oil 5000)"
ingest_cut RU "enforcement.alert (cut)" "RU KZ" "$(alert 'Cash smuggling attempt' Orenburg)"
ingest_cut CN "rms.method public (cut)" "$ALL" "$(method public 'Container scanning selection')"
ingest_cut UZ "energy.transfer non_confidential (cut)" "$ALL" "$(energy non_confidential Termez electricity 800)"
converge "2. during the cut"
# The connections across the cut stay up until three pings in a row fail (the node's
# PING_INTERVAL 15 s, PING_TIMEOUT 20 s, PING_MAX_FAILURES 3): wait until both sides
# have noticed, so that what follows is ingested with no connection to UZ at all.
t0=$SECONDS
if wait_peers RU 4 150 && wait_peers UZ 0 30; then pass; else fail "the cut was not noticed: RU sees ${n_peers} peers"; fi
note "both sides noticed the cut after $((SECONDS - t0))s more"
ingest_cut RU "ipr.infringement public (cut, no connection)" "$ALL" "$(infringement Naushki Adidas 12)"
ingest_cut UZ "ipr.infringement public (cut, no connection)" "$ALL" "$(infringement Yallama Puma 9)"
converge "2. still cut"

docker network connect --ip "$SUBNET.16" "$NET" "$uz"
for id in "${IDS[@]}"; do NOW[$id]=${FINAL[$id]}; done
converge "2. after reconnecting UZ"
wait_connected UZ

# ---- 3. kill -9 right after acknowledgements ------------------------------------------

note "=== 3. RU killed with SIGKILL right after acknowledging"
batch="{\"records\":["
for i in $(seq 1 10); do
  batch+="$(infringement "Post $i" Reebok "$i"),$(alert "Alert $i" "Post $i"),"
done
batch="${batch%,}]}"
mapfile -t acked < <(post RU "$batch")
[ "${#acked[@]}" -eq 20 ] || die "the batch of 20 got ${#acked[@]} ids"
for ((i = 0; i < 20; i++)); do
  id=${acked[$i]}
  IDS+=("$id")
  if ((i % 2 == 0)); then FINAL[$id]=$ALL; LABEL[$id]="RU ipr.infringement (batch)"; else FINAL[$id]="RU KZ"; LABEL[$id]="RU enforcement.alert (batch)"; fi
  NOW[$id]=${FINAL[$id]}
done
for i in 1 2 3 4 5; do
  ingest RU "energy.transfer non_confidential (before kill)" "RU CN KG KZ UZ" "$(energy non_confidential "Line $i" electricity "$i")"
  acked+=("$ID")
done
ru=$(cid RU)
docker kill -s KILL "$ru" >/dev/null
status=$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$ru")
if [ "$status" = "exited 137" ]; then pass; else fail "RU after SIGKILL: $status, expected 'exited 137'"; fi
docker start "$ru" >/dev/null
wait_api RU
snapshot
for id in "${acked[@]}"; do
  if has "${HELD[RU]}" "$id"; then pass; else fail "RU lost acknowledged ${LABEL[$id]} ${id:0:12}… to SIGKILL"; fi
done
note "RU restarted; ${#acked[@]} acknowledged records checked in its store"
converge "3. after the restart"

# ---- 4. clean stop, audit -------------------------------------------------------------

note "=== 4. TJ stopped with SIGTERM and started"
tj=$(cid TJ)
t0=$SECONDS
docker stop -t 30 "$tj" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$tj")
if [ "$code" = 0 ]; then pass; else fail "TJ exited with status $code on SIGTERM, expected 0"; fi
note "TJ stopped in $((SECONDS - t0))s"
docker start "$tj" >/dev/null
wait_api TJ
wait_connected TJ
converge "4. after TJ's restart"

# The command-line tool in the image, through the node's API: RU sees every running
# member connected, holding the same text of every agreement they share.
peers=$(docker exec "$(cid RU)" tamga peers --config /etc/tamga/node/node.toml --json) ||
  die "tamga peers failed in RU's container"
for m in CN KG KZ TJ UZ; do
  state=$(python3 -c '
import json, sys
p = next(p for p in json.loads(sys.argv[1])["peers"] if p["member"] == sys.argv[2])
print(p["connected"], " ".join(sorted({a["digest"] for a in p["agreements"]})))' "$peers" "$m")
  if [ "$state" = "True match" ]; then pass; else fail "RU's tamga peers says $m: $state, expected connected, match"; fi
done

# ---- 5. policy reload in a running container ------------------------------------------

note "=== 5. RU's administrator pauses KZ under the IPR memorandum; SIGHUP"
digest=$(get RU /v1/status | jget policy_digest)
# As an editor saves: a new file renamed over the old one, in the directory the
# container mounts read-only.
cp -p "$fed/RU/policy.toml" "$fed/RU/policy.toml.new"
cat >>"$fed/RU/policy.toml.new" <<'EOF2'

[[share]]
agreement = "sco-ipr-2012"
except = ["KZ"]
note = "compose test: KZ paused"
EOF2
mv "$fed/RU/policy.toml.new" "$fed/RU/policy.toml"
docker kill -s HUP "$(cid RU)" >/dev/null
t0=$SECONDS
for ((i = 0; i < START_SECS * 2 && SECONDS - t0 < START_SECS; i++)); do
  new=$(get RU /v1/status | jget policy_digest)
  [ "$new" != "$digest" ] && break
  sleep 0.5
done
if [ "$new" != "$digest" ]; then pass; else fail "RU's policy digest did not change after the edit and SIGHUP"; fi
if [ "$(docker inspect -f '{{.State.Status}}' "$(cid RU)")" = running ]; then pass; else fail "RU is not running after SIGHUP"; fi
# sco-ipr-2012 with KZ paused: every party but KZ.
ingest RU "ipr.infringement public (KZ paused)" "RU CN KG TJ UZ" "$(infringement Pogranichny Nike 7)"
converge "5. after the reload"

for m in "${MEMBERS[@]}"; do
  if out=$(docker exec "$(cid "$m")" tamga audit verify --config /etc/tamga/node/node.toml 2>&1); then
    pass
  else
    fail "$m: tamga audit verify: $out"
  fi
done

# The EXIT trap tears down and prints the summary.
