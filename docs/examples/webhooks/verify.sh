#!/bin/sh
# Check an Iris webhook's X-Iris-Signature (docs/jobs.md) with openssl.
#
#   sh verify.sh SECRET "$X_IRIS_SIGNATURE" < raw-body
#
# Exit status 0: valid and at most five minutes old; 1: not.
secret=$1
header=$2
t=$(printf '%s\n' "$header" | tr ',' '\n' | sed -n 's/^t=//p')
v1=$(printf '%s\n' "$header" | tr ',' '\n' | sed -n 's/^v1=//p')
case $t in '' | *[!0-9]*) exit 1 ;; esac
age=$(($(date +%s) - t))
[ "${age#-}" -le 300 ] || exit 1
# The MAC covers "<t>." followed by the raw body, byte for byte.
expected=$({ printf '%s.' "$t"; cat; } | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
[ -n "$v1" ] && [ "$expected" = "$v1" ]
