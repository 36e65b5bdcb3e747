# scripts/lib/topology.sh (sourced by the demo scripts): the topology they give `ahactl up`,
# the four services on loopback, the learner on PORT, reward, rollout and refpolicy on
# PORT+1, PORT+2 and PORT+3.
#
#   write_topology FILE about=TEXT port=PORT device=DEV model=DIR jobs=DIR reward=EXE \
#     rollout=EXE refpolicy=EXE learner=EXE max_batch=N max_seq_len=N restart=true|false log=LEVEL
#
# Every key is required. device is the rollout's, the refpolicy's and the learner's; log is the
# rollout's and the learner's level (the reward and the refpolicy log warnings).
write_topology() {
  local file=$1 kv about port device model jobs reward rollout refpolicy learner max_batch max_seq_len restart log
  shift
  for kv in "$@"; do
    case ${kv%%=*} in
      about | port | device | model | jobs | reward | rollout | refpolicy | learner | max_batch | max_seq_len | \
        restart | log) printf -v "${kv%%=*}" '%s' "${kv#*=}" ;;
      *) echo "write_topology: unknown key in '$kv'" >&2; return 1 ;;
    esac
  done
  # set -u (both demos) stops on a key left out
  cat >"$file" <<EOF
{
  "format": "aha.topology/v1",
  "about": "$about",
  "services": [
    {"name": "reward", "binary": "$reward",
     "args": ["--listen", "127.0.0.1:$((port + 1))", "--log-level", "warn"],
     "port": $((port + 1)), "restart": $restart, "health": "127.0.0.1:$((port + 1))"},
    {"name": "rollout", "binary": "$rollout",
     "args": ["--listen", "127.0.0.1:$((port + 2))", "--model", "$model", "--device", "$device",
              "--max-batch", "$max_batch", "--max-seq-len", "$max_seq_len", "--log-level", "$log"],
     "port": $((port + 2)), "restart": $restart, "health": "127.0.0.1:$((port + 2))"},
    {"name": "refpolicy", "binary": "$refpolicy",
     "args": ["--listen", "127.0.0.1:$((port + 3))", "--model", "$model", "--device", "$device",
              "--log-level", "warn"],
     "port": $((port + 3)), "restart": $restart, "health": "127.0.0.1:$((port + 3))"},
    {"name": "learner", "binary": "$learner",
     "args": ["--listen", "127.0.0.1:$port", "--jobs-dir", "$jobs",
              "--rollout", "127.0.0.1:$((port + 2))", "--reward", "127.0.0.1:$((port + 1))",
              "--refpolicy", "127.0.0.1:$((port + 3))", "--device", "$device", "--log-level", "$log"],
     "port": $port, "restart": $restart, "health": "127.0.0.1:$port"}
  ]
}
EOF
}
