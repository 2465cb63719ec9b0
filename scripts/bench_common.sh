# Shell helpers the CPU benchmark drivers share (sourced by bench_train.sh, bench_generate.sh).

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Prefixes each stderr line with the seconds since the run began and the CPU seconds (user +
# system, all threads) the process named in the file $2 has used so far.
stamp() {
    local t0=$1 pidfile=$2 pid="" cpu
    local tick
    tick=$(getconf CLK_TCK)
    while IFS= read -r line; do
        [[ -z $pid && -s $pidfile ]] && pid=$(cat "$pidfile")
        cpu=0
        if [[ -n $pid && -r /proc/$pid/stat ]]; then
            cpu=$(awk -v t="$tick" '{ sub(/^.*\) /, ""); print ($12 + $13) / t }' "/proc/$pid/stat")
        fi
        printf '%.3f %s %s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" "$cpu" "$line"
    done
}

# Writes the pid of the ti-xla child of the background job $1 to the file $2, for `stamp`.
find_ti_xla_pid() {
    local job=$1 pidfile=$2
    for _ in $(seq 50); do
        pgrep -P "$job" -x ti-xla > "$pidfile" && return 0
        sleep 0.1
    done
}
