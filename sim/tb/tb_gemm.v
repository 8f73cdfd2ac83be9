// Replays a golden `gemm` op (BMM = 0) or `bmm_qk` op (BMM = 1) through rq_gemm_tile, TN output channels
// per pass. Files from the golden set via $readmemh; parameters from the manifest (repq_hw/golden/rtl.py).
// gemm   plusargs: +a= (input [B, M, K]) +w= (weight [N, K]) +wzp= ([N]) +bias= ([N]) +out= ([B, M, N])
// bmm_qk plusargs: +a= (q [B, H, M, K]) +w= (k [B, H, N, K]) +out= ([B, H, M, N]); zero points A_ZP, B_ZP
`timescale 1ns/1ps
module tb_gemm;
    parameter integer BMM  = 0;
    parameter integer NB   = 1;            // gemm: images; bmm: images x heads
    parameter integer M    = 1;
    parameter integer K    = 1;
    parameter integer N    = 1;
    parameter integer TN   = 8;
    parameter integer A_W  = 8;
    parameter integer W_W  = 8;
    parameter integer WZP_W = 32, WZP_S = 1;
    parameter integer BIAS_W = 32, BIAS_S = 1;
    parameter integer OUT_W = 32, OUT_S = 1;
    parameter signed [31:0] A_ZP = 0;
    parameter signed [31:0] B_ZP = 0;      // bmm only
    `include "tb_util.vh"

    localparam integer W_ROWS = (BMM != 0) ? NB * N : N;
    reg [A_W-1:0]    a_mem   [0:NB*M*K-1];
    reg [W_W-1:0]    w_mem   [0:W_ROWS*K-1];
    reg [WZP_W-1:0]  wzp_mem [0:N-1];
    reg [BIAS_W-1:0] b_mem   [0:N-1];
    reg [OUT_W-1:0]  out_mem [0:NB*M*N-1];

    reg clk = 0, rst = 1, clear = 0, in_valid = 0, finish = 0;
    reg [7:0] a;
    reg [TN*8-1:0] w, w_next;
    reg [TN*32-1:0] wzp, bias;
    wire out_valid;
    wire [TN*32-1:0] y;
    wire [TN-1:0] ovf;
    always #5 clk = ~clk;

    rq_gemm_tile #(.TN(TN), .CW(8)) dut (.clk(clk), .rst(rst), .clear(clear), .in_valid(in_valid), .a(a),
        .w(w), .finish(finish), .a_zp(A_ZP), .w_zp(wzp), .bias(bias), .k_len(K[31:0]), .out_valid(out_valid),
        .y(y), .ovf(ovf));

    integer b, m, n0, j, k, idx;
    reg signed [63:0] want, got;
    initial begin
        n_checked = 0; n_bad = 0;
        if (!$value$plusargs("a=%s", fname)) $fatal(1, "missing +a=");
        $readmemh(fname, a_mem);
        if (!$value$plusargs("w=%s", fname)) $fatal(1, "missing +w=");
        $readmemh(fname, w_mem);
        if (!$value$plusargs("out=%s", fname)) $fatal(1, "missing +out=");
        $readmemh(fname, out_mem);
        if (BMM == 0) begin
            if (!$value$plusargs("wzp=%s", fname)) $fatal(1, "missing +wzp=");
            $readmemh(fname, wzp_mem);
            if (!$value$plusargs("bias=%s", fname)) $fatal(1, "missing +bias=");
            $readmemh(fname, b_mem);
        end
        if ((^a_mem[NB*M*K-1] === 1'bx) || (^w_mem[W_ROWS*K-1] === 1'bx) || (^out_mem[NB*M*N-1] === 1'bx))
            $fatal(1, "a golden file is shorter than the manifest says");
        repeat (2) @(negedge clk);
        rst = 0;
        for (b = 0; b < NB; b = b + 1)
            for (m = 0; m < M; m = m + 1)
                for (n0 = 0; n0 < N; n0 = n0 + TN) begin
                    for (j = 0; j < TN; j = j + 1) begin
                        wzp[j*32 +: 32]  = (n0 + j >= N) ? 32'd0 : ((BMM != 0) ? B_ZP : sx64(wzp_mem[n0 + j], WZP_W, WZP_S));
                        bias[j*32 +: 32] = (n0 + j >= N || BMM != 0) ? 32'd0 : sx64(b_mem[n0 + j], BIAS_W, BIAS_S);
                    end
                    @(negedge clk) clear = 1;
                    @(negedge clk) clear = 0;
                    for (k = 0; k < K; k = k + 1) begin
                        in_valid = 1;
                        a = a_mem[(b * M + m) * K + k];
                        for (j = 0; j < TN; j = j + 1)
                            w_next[j*8 +: 8] = (n0 + j >= N) ? 8'd0 :
                                               w_mem[(((BMM != 0) ? b * N : 0) + n0 + j) * K + k];
                        w = w_next;
                        @(negedge clk);
                    end
                    in_valid = 0;
                    finish = 1;
                    @(negedge clk) finish = 0;
                    if (!out_valid) $fatal(1, "tile did not answer");
                    for (j = 0; j < TN && n0 + j < N; j = j + 1) begin
                        idx = (b * M + m) * N + n0 + j;
                        want = sx64(out_mem[idx], OUT_W, OUT_S);
                        got = $signed(y[j*32 +: 32]);
                        if (got != want || ovf[j]) begin
                            if (n_bad < 10) $display("MISMATCH gemm element %0d: rtl %0d golden %0d ovf %0d", idx, got, want, ovf[j]);
                            n_bad = n_bad + 1;
                        end
                        n_checked = n_checked + 1;
                    end
                end
        report_and_exit((BMM != 0) ? "bmm_qk" : "gemm");
    end
endmodule
