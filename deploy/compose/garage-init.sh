#!/bin/sh
# Make each Garage instance of deploy/compose/docker-compose.yml a location
# Trireme can use, through Garage's admin API (v2): a one-node layout, the
# bucket, and the S3 keys the `init` service generated (the controller's
# and the agent's), allowed to read and write it. Safe to run again: what
# exists is left as it is.
#
#   GARAGE_ADMINS     "http://garage-1:3903 http://garage-2:3903 ..." (required)
#   ADMIN_TOKEN_FILE  file holding the admin token (required)
#   KEY_FILES         credentials files (`access_key_id = GK...`,
#                     `secret_access_key = ...`), each key named after its
#                     file's directory, e.g. .../agent/s3.credentials:
#                     trireme-agent (required)
#   BUCKET          bucket name (default trireme)
#   CAPACITY        bytes given to each node's layout role (default 10 GB)
#
# Needs only sh, curl and sed (the curl image has them).
set -eu

: "${GARAGE_ADMINS:?}" "${ADMIN_TOKEN_FILE:?}" "${KEY_FILES:?}"
BUCKET=${BUCKET:-trireme}
CAPACITY=${CAPACITY:-10000000000}
TOKEN=$(cat "$ADMIN_TOKEN_FILE")

api() { # METHOD URL [JSON]: the answer's body; fails on an HTTP error
    if [ $# -ge 3 ]; then
        curl -fsS -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' --data "$3" "$2"
    else
        curl -fsS -X "$1" -H "Authorization: Bearer $TOKEN" "$2"
    fi
}

field() { # NAME: the first "NAME": "value" of stdin (JSON)
    sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n 1
}

cred() { # FILE NAME: a value of a credentials file
    sed -n "s/^$2 *= *//p" "$1" | head -n 1
}

for admin in $GARAGE_ADMINS; do
    tries=0
    until api GET "$admin/health" >/dev/null 2>&1 || api GET "$admin/v2/GetClusterHealth" >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ "$tries" -lt 60 ] || { echo "garage-init: $admin does not answer" >&2; exit 1; }
        sleep 1
    done
    status=$(api GET "$admin/v2/GetClusterStatus" | tr -d '\n')
    node=$(printf '%s' "$status" | field id)
    [ -n "$node" ] || { echo "garage-init: no node id from $admin: $status" >&2; exit 1; }
    layout=$(api GET "$admin/v2/GetClusterLayout" | tr -d '\n')
    if printf '%s' "$layout" | grep -q "\"zone\""; then
        echo "garage-init: $admin: layout already set"
    else
        api POST "$admin/v2/UpdateClusterLayout" \
            "{\"roles\":[{\"id\":\"$node\",\"zone\":\"dc1\",\"capacity\":$CAPACITY,\"tags\":[]}]}" >/dev/null
        version=$(api GET "$admin/v2/GetClusterLayout" | tr -d '\n' | sed -n 's/.*"version": *\([0-9]*\).*/\1/p' | head -n 1)
        api POST "$admin/v2/ApplyClusterLayout" "{\"version\":$((version + 1))}" >/dev/null
        echo "garage-init: $admin: layout applied (node ${node%"${node#????????????????}"})"
    fi
    bucket=$(api GET "$admin/v2/GetBucketInfo?globalAlias=$BUCKET" 2>/dev/null | tr -d '\n' | field id || true)
    if [ -z "$bucket" ]; then
        bucket=$(api POST "$admin/v2/CreateBucket" "{\"globalAlias\":\"$BUCKET\"}" | tr -d '\n' | field id)
        echo "garage-init: $admin: bucket $BUCKET created"
    fi
    for f in $KEY_FILES; do
        who=$(basename "$(dirname "$f")")
        id=$(cred "$f" access_key_id)
        secret=$(cred "$f" secret_access_key)
        [ -n "$id" ] && [ -n "$secret" ] || { echo "garage-init: $f has no access_key_id or secret_access_key" >&2; exit 1; }
        if ! api GET "$admin/v2/GetKeyInfo?id=$id" >/dev/null 2>&1; then
            api POST "$admin/v2/ImportKey" \
                "{\"accessKeyId\":\"$id\",\"secretAccessKey\":\"$secret\",\"name\":\"trireme-$who\"}" >/dev/null
            echo "garage-init: $admin: key for the $who imported"
        fi
        api POST "$admin/v2/AllowBucketKey" \
            "{\"bucketId\":\"$bucket\",\"accessKeyId\":\"$id\",\"permissions\":{\"read\":true,\"write\":true,\"owner\":false}}" >/dev/null
    done
done
echo "garage-init: done"
