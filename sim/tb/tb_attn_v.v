// Replays a golden `attn_v_shift` op through rq_attn_v_tile (TD value columns per pass).
// Plusargs: +codes= (log2 codes [B, H, M, N]) +v= (values [B, H, N, D]) +out= ([B, H, M, D])
`timescale 1ns/1ps
module tb_attn_v;
    parameter integer NB = 1;               // images x heads
    parameter integer M = 1, N = 1, D = 1;
    parameter integer TD = 8;
    parameter integer C_W = 4, V_W = 4;
    parameter integer OUT_W = 32, OUT_S = 1;
    parameter integer ZSTATE = 15;
    parameter integer F = 8;
    parameter integer Q = 15;
    parameter integer R = 46341;
    parameter signed [31:0] V_ZP = 0;
    parameter integer MODE = 1;
    `include "tb_util.vh"

    reg [C_W-1:0]   c_mem   [0:NB*M*N-1];
    reg [V_W-1:0]   v_mem   [0:NB*N*D-1];
    reg [OUT_W-1:0] out_mem [0:NB*M*D-1];

    reg clk = 0, rst = 1, clear = 0, in_valid = 0, finish = 0;
    reg [7:0] code;
    reg [TD*8-1:0] v, v_next;
    wire out_valid, err;
    wire [TD*64-1:0] y;
    always #5 clk = ~clk;

    rq_attn_v_tile #(.TD(TD)) dut (.clk(clk), .rst(rst), .clear(clear), .in_valid(in_valid), .code(code),
        .v(v), .finish(finish), .zstate(ZSTATE[7:0]), .f(F[5:0]), .q(Q[4:0]), .r_mult(R[31:0]), .v_zp(V_ZP),
        .mode(MODE[1:0]), .out_valid(out_valid), .y(y), .err(err));

    integer b, m, d0, j, n, idx;
    reg signed [63:0] want, got;
    initial begin
        n_checked = 0; n_bad = 0;
        if (!$value$plusargs("codes=%s", fname)) $fatal(1, "missing +codes=");
        $readmemh(fname, c_mem);
        if (!$value$plusargs("v=%s", fname)) $fatal(1, "missing +v=");
        $readmemh(fname, v_mem);
        if (!$value$plusargs("out=%s", fname)) $fatal(1, "missing +out=");
        $readmemh(fname, out_mem);
        if ((^c_mem[NB*M*N-1] === 1'bx) || (^v_mem[NB*N*D-1] === 1'bx) || (^out_mem[NB*M*D-1] === 1'bx))
            $fatal(1, "a golden file is shorter than the manifest says");
        repeat (2) @(negedge clk);
        rst = 0;
        for (b = 0; b < NB; b = b + 1)
            for (m = 0; m < M; m = m + 1)
                for (d0 = 0; d0 < D; d0 = d0 + TD) begin
                    @(negedge clk) clear = 1;
                    @(negedge clk) clear = 0;
                    for (n = 0; n < N; n = n + 1) begin
                        in_valid = 1;
                        code = c_mem[(b * M + m) * N + n];
                        for (j = 0; j < TD; j = j + 1)
                            v_next[j*8 +: 8] = (d0 + j >= D) ? 8'd0 : v_mem[(b * N + n) * D + d0 + j];
                        v = v_next;
                        @(negedge clk);
                    end
                    in_valid = 0;
                    finish = 1;
                    @(negedge clk) finish = 0;
                    if (!out_valid) $fatal(1, "tile did not answer");
                    for (j = 0; j < TD && d0 + j < D; j = j + 1) begin
                        idx = (b * M + m) * D + d0 + j;
                        want = sx64(out_mem[idx], OUT_W, OUT_S);
                        got = $signed(y[j*64 +: 64]);
                        if (got != want || err) begin
                            if (n_bad < 10) $display("MISMATCH attn_v element %0d: rtl %0d golden %0d err %0d", idx, got, want, err);
                            n_bad = n_bad + 1;
                        end
                        n_checked = n_checked + 1;
                    end
                end
        report_and_exit("attn_v_shift");
    end
endmodule
