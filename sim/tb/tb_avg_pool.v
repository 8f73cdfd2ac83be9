// Replays a golden `avg_pool` op through rq_avg_pool: the op's input file [B, T, C] (row-major), channel by
// channel, and its expected output file [B, 1, C]. Parameters come from the manifest (repq_hw/golden/rtl.py).
// Plusargs: +x= +out=
`timescale 1ns/1ps
module tb_avg_pool;
    parameter integer NB    = 1;   // images
    parameter integer T     = 1;   // tokens
    parameter integer C     = 1;   // channels
    parameter integer IN_W  = 16, IN_S = 1;
    parameter integer OUT_W = 16, OUT_S = 1;
    parameter integer MODE  = 1;
    `include "tb_util.vh"

    reg [IN_W-1:0]  x_mem   [0:NB*T*C-1];
    reg [OUT_W-1:0] out_mem [0:NB*C-1];

    reg clk = 0, rst = 1, in_valid = 0, in_last = 0;
    reg signed [IN_W-1:0] x;
    wire busy, out_valid;
    wire signed [63:0] y;
    always #5 clk = ~clk;

    rq_avg_pool #(.IN_W(IN_W)) dut (.clk(clk), .rst(rst), .in_valid(in_valid), .in_last(in_last), .x(x),
        .tokens(T), .mode(MODE[1:0]), .busy(busy), .out_valid(out_valid), .y(y));

    integer b, c, t;
    reg signed [63:0] want, xs;
    initial begin
        n_checked = 0; n_bad = 0;
        if (!$value$plusargs("x=%s", fname)) $fatal(1, "missing +x=");
        $readmemh(fname, x_mem);
        if (!$value$plusargs("out=%s", fname)) $fatal(1, "missing +out=");
        $readmemh(fname, out_mem);
        if ((^x_mem[NB*T*C-1] === 1'bx) || (^out_mem[NB*C-1] === 1'bx))
            $fatal(1, "a golden file is shorter than the manifest says");
        repeat (2) @(negedge clk);
        rst = 0;
        for (b = 0; b < NB; b = b + 1) begin
            for (c = 0; c < C; c = c + 1) begin
                for (t = 0; t < T; t = t + 1) begin
                    @(negedge clk);
                    xs = sx64(x_mem[(b * T + t) * C + c], IN_W, IN_S);
                    x = xs[IN_W-1:0];
                    in_valid = 1;
                    in_last = (t == T - 1);
                end
                @(negedge clk) in_valid = 0; in_last = 0;
                @(posedge out_valid);
                @(negedge clk);
                want = sx64(out_mem[b * C + c], OUT_W, OUT_S);
                if (y != want) begin
                    if (n_bad < 10) $display("MISMATCH avg_pool image %0d channel %0d: rtl %0d golden %0d", b, c, y, want);
                    n_bad = n_bad + 1;
                end
                n_checked = n_checked + 1;
            end
        end
        report_and_exit("avg_pool");
    end
endmodule
